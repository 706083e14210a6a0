"""PyTorch's engine: ``torch.distributed`` with one process per worker, over gloo (CPU tensors).

The processes find each other through the environment variables torchrun sets (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``), whether torchrun started them or
:func:`rnn_backends.parallel.launch.run` did (with ``torch.multiprocessing``). The gradients and
the loss travel in one flat buffer through one ``all_reduce`` (a sum, divided by N: gloo has no
average); the carried state of all rows is rebuilt with ``all_gather``. Every collective is bounded
by the ``timeout`` given to ``init_process_group``.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..backends.base import Backend
from ..errors import ConfigError
from .common import DataParallelBackend, flatten
from .rows import row_slice, shard_rows

ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")


def init_process_group(timeout_s: float, gpu: bool = False) -> tuple[int, int]:
    """Join the process group described by the torchrun environment variables; (rank, world).
    ``gpu`` picks NCCL; nothing passes it yet (one GPU per rank is not wired in, nor tested)."""
    missing = [name for name in ENV if name not in os.environ]
    if missing:
        raise ConfigError(
            f"torch.distributed needs the environment variables {', '.join(missing)}; start the "
            "workers with torchrun (or rnn-backends train --data-parallel N)"
        )
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if gpu else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return dist.get_rank(), dist.get_world_size()


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class TorchDataParallel(DataParallelBackend):
    """One rank of a ``torch.distributed`` job (the process group is already joined)."""

    engine = "torch.distributed"

    def __init__(self, inner: Backend, workers: int, rank: int) -> None:
        super().__init__(inner, workers, rank)
        self.allreduce_bytes = 0  # bytes this rank sent into all_reduce at the last step

    def _mean(self, tree: Any) -> Any:
        leaves, rebuild = flatten(tree)
        flat = torch.cat([leaf.reshape(-1) for leaf in leaves])
        self.allreduce_bytes = flat.numel() * flat.element_size()
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat = flat / self.workers
        out, at = [], 0
        for leaf in leaves:
            out.append(flat[at : at + leaf.numel()].reshape(leaf.shape))
            at += leaf.numel()
        return rebuild(out)

    def _gather(self, carry: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(carry) for _ in range(self.workers)]
        dist.all_gather(parts, carry.contiguous())
        return torch.cat(parts, dim=-2)

    def _spmd(self, kind, make_body, replicated, X, Y, h0):
        rows = shard_rows(np.shape(X)[0], self.workers)
        ids = [self.inner._ids(row_slice(np.asarray(a), self.rank, rows)) for a in (X, Y)]
        out, carry = make_body(self._mean)(replicated, *ids, row_slice(h0, self.rank, rows))
        return out, self._gather(self.inner._detach(carry))
