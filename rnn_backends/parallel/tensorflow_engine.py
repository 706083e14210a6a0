"""TensorFlow's engine: ``tf.distribute.MirroredStrategy`` over N devices, the replica context's
``all_reduce(MEAN)`` as the collective.

On the CPU the N devices are logical CPU devices (``tf.config.set_logical_device_configuration``),
which must be made before TensorFlow's runtime starts: :func:`expose_cpus` runs first in the fresh
worker process that :func:`rnn_backends.parallel.launch.run` starts. The step is one
``tf.function`` around ``strategy.run``; every replica gets its rows of the ids and of the carried
state (``experimental_distribute_values_from_function``) and the same parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.base import Backend
from ..backends.tensorflow_logs import quiet_cpp_logs, tf
from ..errors import ConfigError
from .common import DataParallelBackend
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
