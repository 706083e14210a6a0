"""MXNet's engine: a kvstore (``device`` or ``local``) over N contexts ``cpu(0) ... cpu(N-1)``.

One process, one backend per context. A step copies the weights to every context, runs every
context's part on its rows (MXNet schedules them asynchronously), sums the losses and gradients
with one ``kvstore.pushpull`` per tensor and divides by N, then updates once on context 0 -- the
parameter-server pattern of Gluon's ``Trainer`` with the update on the kvstore: every worker
reads the same updated weights at the next step. Each context keeps its own rows' carried state.
"""

from __future__ import annotations

from typing import Any, cast

import mxnet as mx
import numpy as np
from mxnet import np as mnp

from ..backends.mxnet_backend import MxnetBackend
from ..backends.registry import get_backend
from ..errors import ConfigError
from .common import DataParallelBackend, flatten
from .rows import row_slice, shard_rows

KVSTORES = ("device", "local")


class MxnetDataParallel(DataParallelBackend):
    """N contexts of this process as N workers, reduced through a kvstore."""

    engine = "mxnet kvstore"
    inner: MxnetBackend

    def __init__(self, backend_kwargs: dict[str, Any], workers: int,
                 kvstore: str = "device") -> None:  # fmt: skip
        if kvstore not in KVSTORES:
            raise ConfigError(f"kvstore must be one of {', '.join(KVSTORES)}, got {kvstore!r}")
        replicas = [cast(MxnetBackend, get_backend("mxnet", **backend_kwargs))
                    for _ in range(workers)]  # fmt: skip
        gpu = replicas[0].device.startswith("gpu")
        if gpu and mx.context.num_gpus() < workers:
            raise ConfigError(f"MXNet sees {mx.context.num_gpus()} GPU(s), {workers} "
                              "data-parallel workers asked for")  # fmt: skip
        for i, b in enumerate(replicas):
            b._ctx = mx.gpu(i) if gpu else mx.cpu(i)
            b.device = str(b._ctx)
        super().__init__(replicas[0], workers)
        self.replicas = replicas
        self.kvstore = mx.kv.create(kvstore)
        self._keys: set[int] = set()
        self.allreduce_bytes = 0

    def _mean_over(self, trees: list[Any]) -> Any:
        """The average of one tree per context, with the kvstore; on context 0."""
        leaves = [flatten(t)[0] for t in trees]
        _, rebuild = flatten(trees[0])
        self.allreduce_bytes = sum(x.size * x.dtype.itemsize for x in leaves[0])
        out = []
        for key in range(len(leaves[0])):
            values = [lv[key].reshape(-1) if lv[key].ndim == 0 else lv[key] for lv in leaves]
            if key not in self._keys:
                self.kvstore.init(key, mnp.zeros_like(values[0]))
                self._keys.add(key)
            self.kvstore.pushpull(key, values, out=values)  # every context gets the sum
            total = values[0].reshape(leaves[0][key].shape)
            out.append(total / self.workers)
        return rebuild(out)

    def _spmd(self, kind, make_body, replicated, X, Y, h0):
        rows = shard_rows(np.shape(X)[0], self.workers)
        parts = []
        for i, b in enumerate(self.replicas):
            body = make_body(None)
            ctx = b._ctx
            rep = replicated if i == 0 else _to_context(replicated, ctx)
            ids = [b._ids(row_slice(np.asarray(a), i, rows)) for a in (X, Y)]
            h0_i = row_slice(h0, i, rows).as_in_context(ctx)
            parts.append(body.local(rep, *ids, h0_i))
        averaged = self._mean_over([(loss, grads) for loss, _, grads in parts])
        carry = mnp.concatenate([c.as_in_context(self.inner._ctx) for _, c, _ in parts], axis=-2)
        return make_body(None).finish(replicated, averaged), carry


def _to_context(tree: Any, ctx: Any) -> Any:
    """Every MXNet array in ``tree`` copied to ``ctx``; other leaves (floats) as they are."""
    leaves, rebuild = flatten(tree)
    return rebuild([x.as_in_context(ctx) if hasattr(x, "as_in_context") else x for x in leaves])
