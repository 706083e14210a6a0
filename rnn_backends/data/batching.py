"""Minibatches of token ids, framework-free and seeded.

Two schemes:

* ``windows`` (the textbook, 1.0 edition): every stride-1 window of ``num_steps + 1`` tokens is an
  example; the first ``num_train`` windows train (shuffled each epoch by a seeded NumPy generator),
  the next ``num_val`` validate (they overlap the last training windows by ``num_steps`` tokens,
  as in the book), and after a gap of ``num_steps`` windows the next ``num_test`` test (the gap
  makes the test tokens disjoint from every training and validation window's). The hidden state
  starts from zero in every batch. ``num_train`` None is the book's 10,000 (fewer if the corpus
  has fewer before the held-out windows).
* ``sequential``: the tokens the training windows cover are cut into ``batch_size`` rows and read
  left to right, so row ``b`` of batch ``i + 1`` continues row ``b`` of batch ``i``. The hidden
  state is carried across batches and detached (truncated BPTT). Each epoch starts at a seeded
  random offset. ``num_train`` None takes every window before the held-out ones: a batch of
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
AUTO_NUM_TEST = 5000  # test windows when num_test is left out and the corpus has room


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
        room = total - self.held_out  # windows left for training
        if room <= 0:
            raise CorpusError(
                f"the corpus gives {total} windows of {cfg.num_steps + 1} tokens and num_val="
                f"{cfg.num_val} + num_test={self.num_test} (+ a gap of num_steps={cfg.num_steps} "
                f"before the test windows) take them all; set num_val (--num-val) and num_test "
                f"(--num-test; 0 leaves the test split out) to {max(0, total // 5)} or less, or "
                "use a longer corpus"
            )
        if cfg.num_train is not None and cfg.num_train > room:
            raise CorpusError(
                f"the corpus gives {total} windows of {cfg.num_steps + 1} tokens, but num_train="
                f"{cfg.num_train} + num_val={cfg.num_val} + num_test={self.num_test} were asked "
                f"for; set num_train (--num-train) to {room} or less, lower num_val or num_test "
                "(--num-test 0 leaves the test split out), or use a longer corpus"
            )
        if cfg.batching == "sequential":
            self._check_sequential(room)

    @property
    def num_test(self) -> int:
        """Test windows: ``config.num_test``, or for None :data:`AUTO_NUM_TEST` when the corpus
        holds them (and the gap before them) beside the validation windows and a training split
        of ``num_train`` windows (left out: the book's 10,000 with ``windows`` batching, one
        batch of B x T with ``sequential``), else 0."""
        cfg = self.config
        if cfg.num_test is not None:
            return cfg.num_test
        if cfg.num_train is not None:
            need = cfg.num_train
        else:
            need = BOOK_NUM_TRAIN if cfg.batching == "windows" else cfg.batch_size * cfg.num_steps
        total = len(self.ids) - cfg.num_steps
        fits = need + cfg.num_val + cfg.num_steps + AUTO_NUM_TEST <= total
        return AUTO_NUM_TEST if fits else 0

    @property
    def held_out(self) -> int:
        """Windows after the training ones: validation, the gap before the test split, test."""
        cfg, test = self.config, self.num_test
        return cfg.num_val + (cfg.num_steps + test if test else 0)

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
        room = len(self.ids) - self.config.num_steps - self.held_out
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
    def val_start(self) -> int:
        """Index of the first validation window (= of its first token)."""
        return self.num_train

    @property
    def test_start(self) -> int:
        """Index of the first test window: ``num_steps`` windows after the last validation
        window starts, so its first token follows the last validation token."""
        return self.num_train + self.config.num_val + self.config.num_steps

    @property
    def val_ids(self) -> np.ndarray:
        """Tokens covered by the validation windows."""
        start = self.val_start
        return self.ids[start : start + self.config.num_val + self.config.num_steps]

    @property
    def test_ids(self) -> np.ndarray:
        """Tokens covered by the test windows (empty without a test split)."""
        if not self.num_test:
            return self.ids[:0]
        start = self.test_start
        return self.ids[start : start + self.num_test + self.config.num_steps]

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
        return self._held_out_batches(self.val_start, self.config.num_val)

    def test_batches(self) -> Iterator[Batch]:
        """Test batches in corpus order, cut exactly as the validation batches are."""
        return self._held_out_batches(self.test_start, self.num_test)

    def _held_out_batches(self, first: int, count: int) -> Iterator[Batch]:
        """The batches of the ``count`` windows from window ``first`` on, in corpus order."""
        cfg = self.config
        if count == 0:
            return
        if cfg.batching == "sequential":
            # A held-out span is short; use as many rows as it can fill.
            span = self.ids[first : first + count + cfg.num_steps]
            rows = max(1, min(cfg.batch_size, (len(span) - 1) // cfg.num_steps))
            yield from sequential_batches(span, rows, cfg.num_steps)
            return
        win = windows(self.ids, cfg.num_steps)[first : first + count]
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
