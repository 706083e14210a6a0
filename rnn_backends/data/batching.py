"""Minibatches of token ids, framework-free and seeded.

Two schemes:

* ``windows`` (the textbook, 1.0 edition): every stride-1 window of ``num_steps + 1`` tokens is an
  example; the first ``num_train`` windows train (shuffled each epoch by a seeded NumPy generator),
  the next ``num_val`` validate. The hidden state starts from zero in every batch. ``num_train``
  None is the book's 10,000 (fewer if the corpus has fewer before the validation windows).
* ``sequential``: the tokens the training windows cover are cut into ``batch_size`` rows and read
  left to right, so row ``b`` of batch ``i + 1`` continues row ``b`` of batch ``i``. The hidden
  state is carried across batches and detached (truncated BPTT). Each epoch starts at a seeded
  random offset. ``num_train`` None takes every window before the validation ones: a batch of
  B rows of T steps needs B * T training windows, more than the book's 10,000 at its B and T.

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

BOOK_NUM_TRAIN = 10000  # the textbook's training windows: ``windows`` batching's default


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
        cfg = self.config
        total = len(windows(self.ids, cfg.num_steps))
        room = total - cfg.num_val  # windows left for training
        if room <= 0:
            raise CorpusError(
                f"the corpus gives {total} windows of {cfg.num_steps + 1} tokens and num_val="
                f"{cfg.num_val} takes them all; set num_val (--num-val) to {max(0, total // 3)} "
                "or less, or use a longer corpus"
            )
        if cfg.num_train is not None and cfg.num_train > room:
            raise CorpusError(
                f"the corpus gives {total} windows of {cfg.num_steps + 1} tokens, but num_train="
                f"{cfg.num_train} + num_val={cfg.num_val} were asked for; set num_train "
                f"(--num-train) to {room} or less, lower num_val, or use a longer corpus"
            )
        if cfg.batching == "sequential":
            self._check_sequential(room)

    def _check_sequential(self, room: int) -> None:
        """Refuse a sequential batch that the training windows cannot fill, saying which option
        to change to what.

        Every epoch reads ``num_train + T`` tokens from an offset of up to ``T - 1``, so one batch
        of B rows x T steps needs ``num_train >= B * T`` (checked here rather than at the first
        epoch that draws the largest offset).
        """
        cfg = self.config
        B, T, have = cfg.batch_size, cfg.num_steps, self.num_train
        need = B * T
        if have >= need:
            return
        fixes = []
        if cfg.num_train is not None and need <= room:
            fixes.append(f"set num_train (--num-train) to {need} or more, or leave it out to "
                         f"train on all {room} windows")  # fmt: skip
        if have // T >= 1:
            fixes.append(f"set batch_size (--batch-size) to {have // T} or less")
        elif room // T >= 1:
            fixes.append(f"leave num_train out and set batch_size (--batch-size) to "
                         f"{room // T} or less")  # fmt: skip
        fixes.append("use a longer corpus")
        given = "" if cfg.num_train is None else f" (num_train={cfg.num_train})"
        raise CorpusError(
            f"sequential batches of batch_size={B} x num_steps={T} need {need} training windows "
            f"but the training split has {have}{given}; " + ", or ".join(fixes)
        )

    @property
    def num_train(self) -> int:
        """Training windows: ``config.num_train``, or for None the default of the batching."""
        if self.config.num_train is not None:
            return self.config.num_train
        room = len(self.ids) - self.config.num_steps - self.config.num_val
        return room if self.config.batching == "sequential" else min(BOOK_NUM_TRAIN, room)

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

    def num_train_batches(self, epoch: int = 0) -> int:
        """How many training batches ``epoch`` has (with ``sequential`` batching it depends on
        the epoch's random offset, by at most one)."""
        cfg = self.config
        if cfg.batching == "sequential":
            offset = int(self.epoch_rng(epoch).integers(0, cfg.num_steps))
            rows = (len(self.train_ids) - offset - 1) // cfg.batch_size
            return rows // cfg.num_steps
        return -(-self.num_train // cfg.batch_size)

    def total_train_batches(self) -> int:
        """Training batches in all ``max_epochs`` epochs: the run's updates."""
        return sum(self.num_train_batches(e) for e in range(self.config.max_epochs))
