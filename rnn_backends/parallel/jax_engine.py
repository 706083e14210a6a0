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
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..backends.base import Backend
from ..errors import ConfigError
from .common import DataParallelBackend
from .rows import shard_rows

AXIS = "dp"


class JaxDataParallel(DataParallelBackend):
    """N devices of this process as N workers."""

    engine = "jax shard_map"

    def __init__(self, inner: Backend, workers: int) -> None:
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

    def _mean(self, tree: Any) -> Any:
        leaves = jax.tree_util.tree_leaves(tree)
        self.allreduce_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in leaves)
        return jax.lax.pmean(tree, AXIS)

    def _sharding(self, spec: P) -> NamedSharding:
        return NamedSharding(self.mesh, spec)

    def _spmd(self, kind, make_body, replicated, X, Y, h0):
        shard_rows(np.shape(X)[0], self.workers)
        rows = P(*([None] * (h0.ndim - 2)), AXIS, None)  # the carry's row axis is -2

        def compile_() -> Any:
            body = make_body(self._mean)
            # Inside shard_map the gradient of a replicated input is summed over the devices
            # (JAX inserts the psum). Each worker differentiates its own copy of the weights
            # instead (``pcast`` to device-varying), so that pmean alone makes the average: the
            # collective of this engine, as in the others.
            own = dataclasses.replace(body, local=lambda rep, X, Y, h0: body.local(
                jax.lax.pcast(rep, AXIS, to="varying"), X, Y, h0))  # fmt: skip
            mapped = jax.shard_map(own, mesh=self.mesh,
                                   in_specs=(P(), P(AXIS), P(AXIS), rows), out_specs=(P(), rows))
            return jax.jit(mapped)

        fn = self.inner._cached(("data-parallel", self.workers, kind, h0.ndim), compile_)
        ids = [jax.device_put(np.asarray(a, dtype=np.int64), self._sharding(P(AXIS)))
               for a in (X, Y)]  # fmt: skip
        return fn(
            jax.device_put(replicated, self._sharding(P())), *ids,
            jax.device_put(h0, self._sharding(rows)),
        )

    def _local(self, tensors: Any) -> Any:
        return jax.device_put(tensors, self.inner._device)
