"""Minibatches of token ids, framework-free and seeded.

Two schemes:

* ``windows`` (the textbook, 1.0 edition): every stride-1 window of ``num_steps + 1`` tokens is an
  example; the first ``num_train`` windows train (shuffled each epoch by a seeded NumPy generator),
  the next ``num_val`` validate. The hidden state starts from zero in every batch.
* ``sequential``: the token stream is cut into ``batch_size`` rows and read left to right, so row
  ``b`` of batch ``i + 1`` continues row ``b`` of batch ``i``. The hidden state is carried across
  batches and detached (truncated BPTT). Each epoch starts at a seeded random offset.

Shuffling uses ``np.random.default_rng([seed, epoch])``: any epoch can be replayed on its own, which
is what exact resume needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..config import TrainConfig
from ..errors import CorpusError

Batch = tuple[np.ndarray, np.ndarray]


def windows(ids: np.ndarray, num_steps: int) -> np.ndarray:
    """All stride-1 windows of ``num_steps + 1`` tokens, shape (len(ids) - num_steps, T + 1)."""
    if len(ids) < num_steps + 1:
        raise CorpusError(
            f"the corpus has {len(ids)} tokens but num_steps={num_steps} needs at least "
            f"{num_steps + 1}; use a longer corpus or a smaller --num-steps"
        )
    # A view, in the ids' own (compact) type: no copy of the corpus.
    return sliding_window_view(np.asarray(ids), num_steps + 1)


def _split(chunk: np.ndarray) -> Batch:
    """Inputs and targets of windows (B, T + 1), as fresh contiguous int64 arrays (B, T): the
    corpus keeps compact ids, a batch is where they become int64."""
    return chunk[:, :-1].astype(np.int64), chunk[:, 1:].astype(np.int64)


def sequential_batches(
    ids: np.ndarray, batch_size: int, num_steps: int, offset: int = 0
) -> Iterator[Batch]:
    """Consecutive (X, Y) batches whose rows continue each other; Y is X shifted by one token."""
    ids = np.asarray(ids)  # compact ids; each batch is converted to int64 on its own
    usable = ((len(ids) - offset - 1) // batch_size) * batch_size
    if usable <= 0 or usable // batch_size < num_steps:
        raise CorpusError(
            f"{len(ids)} tokens are too few for sequential batches of batch_size={batch_size} "
            f"x num_steps={num_steps}; need at least {batch_size * num_steps + offset + 1}"
        )
    xs = ids[offset : offset + usable].reshape(batch_size, -1)
    ys = ids[offset + 1 : offset + 1 + usable].reshape(batch_size, -1)
    for start in range(0, (xs.shape[1] // num_steps) * num_steps, num_steps):
        yield (xs[:, start : start + num_steps].astype(np.int64),
               ys[:, start : start + num_steps].astype(np.int64))  # fmt: skip


@dataclass(frozen=True)
class CharBatches:
    """Training and validation batches of one corpus under one :class:`TrainConfig`."""

    ids: np.ndarray
    config: TrainConfig

    def __post_init__(self) -> None:
        total = len(windows(self.ids, self.config.num_steps))
        num_train = self.num_train
        if num_train <= 0 or num_train + self.config.num_val > total:
            raise CorpusError(
                f"the corpus gives {total} windows of {self.config.num_steps + 1} tokens, but "
                f"num_train={self.config.num_train} + num_val={self.config.num_val} were asked "
                "for; lower them or use a longer corpus"
            )
        if self.config.batching == "sequential":
            # sequential_batches is a generator: its length check runs on the first next(). Check
            # the largest random offset an epoch can draw, so that no later epoch can fail.
            cfg = self.config
            next(
                sequential_batches(self.train_ids, cfg.batch_size, cfg.num_steps, cfg.num_steps - 1)
            )

    @property
    def num_train(self) -> int:
        total = len(self.ids) - self.config.num_steps
        if self.config.num_train is None:
            return total - self.config.num_val
        return self.config.num_train

    @property
    def carries_state(self) -> bool:
        """Whether the hidden state flows from one batch into the next."""
        return self.config.batching == "sequential"

    @property
    def train_ids(self) -> np.ndarray:
        """Tokens covered by the training windows."""
        return self.ids[: self.num_train + self.config.num_steps]

    @property
    def val_ids(self) -> np.ndarray:
        """Tokens covered by the validation windows."""
        start = self.num_train
        return self.ids[start : start + self.config.num_val + self.config.num_steps]

    def epoch_rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, epoch])

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """The training batches of ``epoch`` (0-based), reproducible from (seed, epoch) alone."""
        cfg = self.config
        rng = self.epoch_rng(epoch)
        if cfg.batching == "sequential":
            offset = int(rng.integers(0, cfg.num_steps))
            yield from sequential_batches(self.train_ids, cfg.batch_size, cfg.num_steps, offset)
            return
        win = windows(self.ids, cfg.num_steps)[: self.num_train]
        order = rng.permutation(len(win))
        for start in range(0, len(order), cfg.batch_size):
            chunk = win[order[start : start + cfg.batch_size]]
            yield _split(chunk)

    def val_batches(self) -> Iterator[Batch]:
        """Validation batches in corpus order (no shuffling)."""
        cfg = self.config
        if cfg.num_val == 0:
            return
        if cfg.batching == "sequential":
            # The validation span is short; use as many rows as it can fill.
            rows = max(1, min(cfg.batch_size, (len(self.val_ids) - 1) // cfg.num_steps))
            yield from sequential_batches(self.val_ids, rows, cfg.num_steps)
            return
        win = windows(self.ids, cfg.num_steps)[self.num_train : self.num_train + cfg.num_val]
        for start in range(0, len(win), cfg.batch_size):
            yield _split(win[start : start + cfg.batch_size])

    def num_train_batches(self) -> int:
        cfg = self.config
        if cfg.batching == "sequential":
            return sum(1 for _ in self.train_batches(0))
        return -(-self.num_train // cfg.batch_size)
