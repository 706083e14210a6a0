"""TensorFlow's engines: ``tf.distribute.MirroredStrategy`` over N devices of one process (the
replica context's ``all_reduce(MEAN)`` as the collective), and ``MultiWorkerMirroredStrategy``
over N processes, one per machine, described by ``TF_CONFIG``.

On the CPU the N devices are logical CPU devices (``tf.config.set_logical_device_configuration``),
which must be made before TensorFlow's runtime starts: :func:`expose_cpus` runs first in the fresh
worker process that :func:`rnn_backends.parallel.launch.run` starts. The step is one
``tf.function`` around ``strategy.run``; every replica gets its rows of the ids and of the carried
state (``experimental_distribute_values_from_function``) and the same parameters.

Several processes (:class:`TensorflowMultiWorker`): in TF 2.21 the replica context's
``all_reduce`` and ``all_gather`` inside a ``tf.function`` fail under
``MultiWorkerMirroredStrategy`` ("destinations can not be empty"), while the cross-replica
``strategy.reduce`` and ``strategy.gather`` work. So that engine runs the body in its two halves
(:class:`~rnn_backends.parallel.common.Body`): ``local`` under ``strategy.run``, the cross-replica
mean of (loss, gradients), then ``finish`` once per process, identically on every worker.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.tensorflow_logs import quiet_cpp_logs, tf
from ..errors import ConfigError, WorkerError
from . import tf_config
from .common import DataParallelBackend, flatten
from .rows import row_slice, shard_rows


def expose_cpus(workers: int) -> None:
    """Split the CPU into ``workers`` logical devices (before TensorFlow's runtime starts)."""
    with quiet_cpp_logs():
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(workers)]
            )
        except RuntimeError:  # the runtime started already: the devices are what they are
            pass


class TensorflowDataParallel(DataParallelBackend):
    """N logical devices of this process as N replicas of a MirroredStrategy."""

    engine = "tf MirroredStrategy"

    def __init__(self, inner: Backend, workers: int) -> None:
        super().__init__(inner, workers)
        kind = "GPU" if inner.device != "cpu" else "CPU"
        with quiet_cpp_logs():
            devices = tf.config.list_logical_devices(kind)
        if len(devices) < workers:
            raise ConfigError(
                f"TensorFlow sees {len(devices)} logical {kind} device(s), {workers} "
                "data-parallel workers asked for; split the CPU with "
                "tf.config.set_logical_device_configuration before TensorFlow starts "
                "(rnn-backends --data-parallel does it)"
            )
        with quiet_cpp_logs():
            self.strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:workers]])
        self.allreduce_bytes = 0

    def _mean(self, tree: Any) -> Any:
        leaves = tf.nest.flatten(tree)
        self.allreduce_bytes = sum(int(np.prod(x.shape)) * x.dtype.size for x in leaves)
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, tree)

    def _split(self, x: Any, rows: int) -> Any:
        """``x`` (ids or carry, rows on axis -2) as per-replica values, each replica its rows."""
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: row_slice(x, ctx.replica_id_in_sync_group, rows)
        )

    def _spmd(self, kind, make_body, replicated, X, Y, h0):
        rows = shard_rows(np.shape(X)[0], self.workers)
        body = make_body(self._mean)

        def compile_() -> Any:
            def step(rep: Any, X: Any, Y: Any, h0: Any) -> Any:
                return self.strategy.run(body, args=(rep, X, Y, h0))

            return tf.function(step, autograph=False)

        fn = self.inner._cached(("data-parallel", self.workers, kind), compile_)
        X_, Y_ = (self._split(tf.constant(np.asarray(a), dtype=tf.int32), rows) for a in (X, Y))
        with quiet_cpp_logs():
            shared, carries = fn(replicated, X_, Y_, self._split(h0, rows))
        first = tf.nest.map_structure(
            lambda v: self.strategy.experimental_local_results(v)[0], shared
        )
        carry = tf.concat(self.strategy.experimental_local_results(carries), axis=-2)
        return first, carry


def join_cluster(workers: int, timeout_s: float) -> tuple[Any, int]:
    """The ``MultiWorkerMirroredStrategy`` of the cluster ``TF_CONFIG`` describes (checked first,
    see :mod:`.tf_config`) and this process's task index. Made before anything else starts
    TensorFlow's runtime, as the strategy requires. Every collective gives up after
    ``timeout_s`` seconds (TensorFlow's ``CommunicationOptions``), and so does forming the
    cluster (:func:`_exit_after`): a lost worker fails the job instead of hanging it."""
    cluster = tf_config.read(workers)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    with _exit_after(timeout_s), quiet_cpp_logs():  # every worker must join within timeout_s
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if strategy.num_replicas_in_sync != workers:
        raise ConfigError(
            f"MultiWorkerMirroredStrategy has {strategy.num_replicas_in_sync} replicas but "
            f"--data-parallel is {workers}; run one worker per process on the CPU "
            "(CUDA_VISIBLE_DEVICES=-1) or one GPU per process"
        )
    return strategy, cluster.index


@contextlib.contextmanager
def _exit_after(timeout_s: float) -> Iterator[None]:
    """Exit this process with status 1 (and the stack, on standard error) if the block has not
    ended after ``timeout_s`` seconds.

    The strategy's constructor waits for every worker of TF_CONFIG to join; measured here, a lone
    worker 0 waited in ``ensure_initialized`` for minutes (TensorFlow bounds that wait by its
    coordination service's cluster registration, an hour by default; ``CommunicationOptions``
    bounds collectives only). That wait is in C++ holding the GIL, so no Python thread or signal
    handler can end it: ``faulthandler``'s C watchdog can.
    """
    err = os.fdopen(os.dup(2), "w")  # fd 2 itself is captured by quiet_cpp_logs meanwhile
    faulthandler.dump_traceback_later(timeout_s, exit=True, file=err)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        err.close()


class TensorflowMultiWorker(DataParallelBackend):
    """One process (worker ``rank``) of a ``MultiWorkerMirroredStrategy`` job of ``workers``."""

    engine = "tf MultiWorkerMirroredStrategy"

    def __init__(self, inner: Backend, workers: int, strategy: Any, rank: int) -> None:
        super().__init__(inner, workers, rank)
        self.strategy = strategy
        self.allreduce_bytes = 0

    def _spmd(self, kind, make_body, replicated, X, Y, h0):
        rows = shard_rows(np.shape(X)[0], self.workers)
        body = make_body(None)
        traced: list[Any] = []  # the leaves of (loss, grads) and how to rebuild them, at tracing

        def local(rep: Any, X: Any, Y: Any, h0: Any) -> tuple[Any, Any]:
            # (loss, grads) as one flat buffer: one collective per step (strategy.reduce of the
            # tree itself is refused by TF 2.21 in a tf.function).
            loss, carry, grads = body.local(rep, X, Y, h0)
            leaves, rebuild = flatten((loss, grads))
            traced[:] = [leaves, rebuild]
            return tf.concat([tf.reshape(x, [-1]) for x in leaves], axis=0), carry

        def compile_() -> Any:
            def step(rep: Any, X: Any, Y: Any, h0: Any) -> Any:
                flat, carry = self.strategy.run(local, args=(rep, X, Y, h0))
                averaged = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, flat, axis=None)
                leaves, rebuild = traced
                self.allreduce_bytes = averaged.shape[0] * averaged.dtype.size
                sizes = [int(np.prod(x.shape)) for x in leaves]
                parts = tf.split(averaged, sizes)
                tree = rebuild([tf.reshape(p, x.shape) for p, x in zip(parts, leaves, strict=True)])
                # The carries of all rows, in rank order (the rows are split in rank order).
                every = self.strategy.gather(carry, axis=len(h0.shape) - 2)
                return body.finish(rep, tree), every

            return tf.function(step, autograph=False)

        fn = self.inner._cached(("multi-worker", self.workers, kind), compile_)
        X_, Y_ = (tf.constant(row_slice(np.asarray(a), self.rank, rows), dtype=tf.int32)
                  for a in (X, Y))  # fmt: skip
        try:
            with quiet_cpp_logs():
                return fn(replicated, X_, Y_, row_slice(h0, self.rank, rows))
        except tf.errors.OpError as exc:  # a peer died, is unreachable or timed out
            raise WorkerError(self._lost(exc)) from None

    def _lost(self, exc: Exception) -> str:
        """The one-line message for a failed collective, naming the peer TensorFlow blames."""
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # TensorFlow's first line is "Graph execution error:"; the cause is the abort line.
        causes = [line for line in lines if "aborted" in line or "Deadline" in line]
        cause = (causes or lines or [""])[0]
        peer = re.search(r"/job:worker/replica:0/task:(\d+)", str(exc))
        if peer:
            k = int(peer[1])
            who = f"worker {k} of {self.workers} ({tf_config.read(self.workers).workers[k]})"
        else:
            who = "another worker"
        return (f"data-parallel worker {self.rank} of {self.workers} (tensorflow, pid "
                f"{os.getpid()}): a collective failed ({type(exc).__name__}: {cause}); {who} "
                "died, is unreachable or timed out; the job was stopped: resume from the last "
                "checkpoint")
