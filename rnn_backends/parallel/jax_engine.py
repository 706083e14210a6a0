"""JAX's engine: ``jax.shard_map`` over a one-axis mesh of N devices, ``jax.lax.pmean`` as the
collective.

On the CPU the N devices are XLA host devices:
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` must be set before JAX is imported, which
:func:`rnn_backends.parallel.launch.run` does in a fresh worker process. The step is one
``jax.jit`` of the ``shard_map``: the parameters, the optimizer's slots and the scalars are
replicated (``P()``), the ids and the carried state are split by rows (``P("dp")`` on their row
axis). Between steps the parameters stay replicated on the mesh and the carry stays split, so
each device keeps its own rows' state.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..backends.jax_backend import JaxBackend
from ..errors import ConfigError
from .common import DataParallelBackend
from .rows import shard_rows

AXIS = "dp"


MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def join_processes(timeout_s: float) -> None:
    """``jax.distributed.initialize`` from ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, when the first is set (one process per host;
    the mesh then spans every process's devices). Nothing otherwise."""
    if "JAX_COORDINATOR_ADDRESS" not in os.environ:
        return
    missing = [name for name in MULTI_PROCESS_ENV if name not in os.environ]
    if missing:
        raise ConfigError(f"multi-process JAX needs {', '.join(missing)} set as well")
    jax.distributed.initialize(
        os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
        initialization_timeout=int(timeout_s),
    )


class JaxDataParallel(DataParallelBackend):
    """N devices of this process as N workers."""

    engine = "jax shard_map"
    inner: JaxBackend

    def __init__(self, inner: JaxBackend, workers: int) -> None:
        super().__init__(inner, workers)
        platform = "gpu" if inner.device != "cpu" else "cpu"
        devices = jax.devices(platform)
        if len(devices) < workers:
            raise ConfigError(
                f"JAX sees {len(devices)} {platform} device(s), {workers} data-parallel workers "
                f"asked for; on the CPU set XLA_FLAGS=--xla_force_host_platform_device_count="
                f"{workers} before JAX is imported (rnn-backends --data-parallel does it)"
            )
        self.mesh = Mesh(np.array(devices[:workers]), (AXIS,))
        self.allreduce_bytes = 0
        # Several processes (jax.distributed): the mesh spans them all; this process's own arrays
        # (evaluation, export) live on its first local device, and process 0 writes checkpoints.
        self.rank = jax.process_index()
        inner._device = jax.local_devices(backend=platform)[0]

    def _mean(self, tree: Any) -> Any:
        leaves = jax.tree_util.tree_leaves(tree)
        self.allreduce_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
        return jax.lax.pmean(tree, AXIS)

    def _sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def _spmd(self, kind, make_body, replicated, X, Y, h0):
        shard_rows(np.shape(X)[0], self.workers)
        rows = P(*([None] * (h0.ndim - 2)), AXIS, None)  # the carry's row axis is -2
        several = jax.process_count() > 1

        def compile_() -> Any:
            body = make_body(self._mean)
            # Inside shard_map the gradient of a replicated input is summed over the devices
            # (JAX inserts the psum). Each worker differentiates its own copy of the weights
            # instead (``pcast`` to device-varying), so that pmean alone makes the average: the
            # collective of this engine, as in the others.
            own = dataclasses.replace(body, local=lambda rep, X, Y, h0: body.local(
                jax.lax.pcast(rep, AXIS, to="varying"), X, Y, h0))  # fmt: skip
            if not several:
                return jax.jit(jax.shard_map(own, mesh=self.mesh, out_specs=(P(), rows),
                                             in_specs=(P(), P(AXIS), P(AXIS), rows)))  # fmt: skip

            # With several processes every one gets the carry of all rows, so that process 0
            # alone can checkpoint it without a collective the others do not join. Each device
            # writes its rows into zeros and psum adds them up (exact: the rest is zeros), which
            # JAX knows to be replicated, as it does not know all_gather's result to be.
            def gathered(rep: Any, X: Any, Y: Any, h0: Any) -> Any:
                out, carry = own(rep, X, Y, h0)
                n = carry.shape[-2]
                whole = jnp.zeros((*carry.shape[:-2], n * self.workers, carry.shape[-1]),
                                  carry.dtype)  # fmt: skip
                at = jax.lax.axis_index(AXIS) * n
                start = [jnp.zeros((), at.dtype)] * carry.ndim
                start[-2] = at
                whole = jax.lax.dynamic_update_slice(whole, carry, start)
                return out, jax.lax.psum(whole, AXIS)

            return jax.jit(jax.shard_map(gathered, mesh=self.mesh, out_specs=(P(), P()),
                                         in_specs=(P(), P(AXIS), P(AXIS), rows)))  # fmt: skip

        fn = self.inner._cached(("data-parallel", self.workers, kind, h0.ndim), compile_)
        ids = [self._put(np.asarray(a, dtype=np.int64), P(AXIS)) for a in (X, Y)]
        return fn(self._put(replicated, P()), *ids, self._put(h0, rows))

    def _put(self, tree: Any, spec: P) -> Any:
        """``tree`` laid out on the mesh as ``spec`` says. Arrays already so stay; others go
        through the host, which every process holds whole (with several processes an array
        cannot move from one process's device onto the global mesh directly)."""
        sharding = self._sharding(spec)

        def put(x: Any) -> Any:
            if isinstance(x, (int, float)):
                return x  # a weakly typed Python number: it must not make float32 into float64
            if isinstance(x, jax.Array) and x.sharding == sharding:
                return x
            return jax.device_put(np.asarray(x), sharding)

        return jax.tree_util.tree_map(put, tree)

    def _local(self, tensors: Any) -> Any:
        from jax.experimental import multihost_utils

        def local(x: Any) -> Any:
            if not isinstance(x, jax.Array) or x.is_fully_addressable:
                return jax.device_put(x, self.inner._device)
            # Spread over several processes: the replicated weights are whole here already, a
            # carry split by rows is gathered from every process.
            whole = x if x.is_fully_replicated else multihost_utils.process_allgather(x, tiled=True)
            return jax.device_put(np.asarray(whole), self.inner._device)

        return jax.tree_util.tree_map(local, tensors)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.inner.to_numpy(self._local(x))
