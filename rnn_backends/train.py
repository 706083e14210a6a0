"""The backend-agnostic training loop: epochs of clipped optimizer steps at the schedule's learning
rate, perplexity, history, checkpoint.

Perplexity is exp of the token-weighted mean cross-entropy. The textbook's figure (the mean of
per-batch exp(loss)) is reported beside it for parity; the two differ when batches differ in size
or loss.

:func:`train` checks its arguments, opens the output directory and hands the run to a
:class:`_Run`, which holds what changes from step to step (the backend's tensors, the carried
state, the :class:`RunState`) and does one epoch, one step, one evaluation or one checkpoint at a
time.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import StepResult, Trainable
from .baselines import baselines as fit_baselines
from .checkpointing import (
    CHECKPOINT_DIR,
    Checkpoint,
    find_checkpoint,
    remove_stale_temporaries,
)
from .config import ModelConfig, TrainConfig
from .data.batching import Batch, CharBatches
from .data.corpus import Corpus
from .errors import ConfigError, DiskFullError, NonFiniteError, UserError
from .memory import check_fits
from .metrics import Meter, Perplexity
from .optim import Optimizer, OptState, Schedule
from .params import init_params
from .resume import RunState, carry_to_tensors, guard_output, load_run, save_run
from .runfolder import own_folder
from .runlog import RunLog

__all__ = ["Perplexity", "TrainResult", "evaluate", "train"]


def evaluate(
    backend: Trainable, params: Any, batches: Iterable[Batch], carry_state: bool
) -> Perplexity:
    """Perplexity of ``params`` (canonical NumPy weights or the backend's tensors) over
    ``batches`` (no updates); the state is carried from batch to batch when ``carry_state``."""
    meter = Meter()
    state = None
    for X, Y in batches:
        with np.errstate(over="ignore", invalid="ignore"):
            loss, new_state = backend.loss(params, X, Y, state)
        state = new_state if carry_state else None
        meter.add(loss, X.size)
    return meter.result()


@dataclass
class TrainResult:
    """The final canonical weights, the history, the checkpoint directory (None without
    ``out_dir``) and the final weights as the backend's tensors (to generate without a copy)."""

    params: dict[str, np.ndarray]
    history: dict[str, Any]
    checkpoint: Path | None = None
    tensors: Any = field(default=None, repr=False)


def _history_header(
    backend: Trainable, corpus: Corpus, model_config: ModelConfig, train_config: TrainConfig
) -> dict[str, Any]:
    return {
        "backend": backend.name,
        "variant": backend.variant,
        "device": backend.device,
        "version": backend.version(),
        "corpus": corpus.name,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
    }


def _check_arguments(
    backend: Trainable,
    model_config: ModelConfig,
    train_config: TrainConfig,
    params: dict[str, np.ndarray] | None,
    resume: str | Path | None,
    checkpoint_every: int | None,
) -> None:
    """The refusals that need no file: a model the backend cannot train, a backend built for
    another dtype than the one the run records, a bad ``checkpoint_every``, two starting points."""
    model_config.check_trainable(backend)  # a bidirectional model is refused, with the reason
    if backend.dtype != train_config.dtype:
        raise ConfigError(
            f"the backend computes in {backend.dtype} but train_config.dtype is "
            f"{train_config.dtype!r}, which the run and its checkpoints would record; build the "
            f"backend with get_backend({backend.name!r}, dtype=train_config.dtype) or pass "
            f"TrainConfig(dtype={backend.dtype!r})"
        )
    workers = getattr(backend, "workers", 1)  # a parallel.DataParallelBackend has several
    if workers != train_config.data_parallel:
        raise ConfigError(
            f"train_config.data_parallel is {train_config.data_parallel} but the backend runs on "
            f"{workers} worker(s); train with rnn_backends.parallel.train (or rnn-backends train "
            f"--data-parallel N), or TrainConfig(data_parallel={workers})"
        )
    if checkpoint_every is not None and (
        isinstance(checkpoint_every, bool)
        or not isinstance(checkpoint_every, int)
        or checkpoint_every <= 0
    ):
        raise ConfigError(
            f"checkpoint_every must be a positive number of steps, got {checkpoint_every!r}; "
            "omit it to checkpoint only at the start and the end"
        )
    if resume is not None and params is not None:
        raise UserError("pass either params or resume, not both: a resumed run has its weights")


@contextlib.contextmanager
def _open_output(
    out_dir: str | Path | None, resume_dir: Path | None, overwrite: bool
) -> Iterator[Path | None]:
    """The output directory, held for this run while the block runs (created or checked to be
    this package's, and locked: see :mod:`.runfolder`), cleared of what a killed writer left,
    unless it holds another run's checkpoint (see :func:`guard_output`)."""
    if out_dir is None:
        yield None
        return
    out = Path(out_dir)
    # The lock first: a run in progress there is named as such, whatever its checkpoint says.
    with own_folder(out, check=lambda: guard_output(out, resume_dir, overwrite)):
        remove_stale_temporaries(out)
        yield out


def _initial_state(
    header: dict[str, Any],
    model_config: ModelConfig,
    train_config: TrainConfig,
    params: dict[str, np.ndarray] | None,
    loaded: tuple[Checkpoint, RunState] | None,
) -> tuple[dict[str, np.ndarray], RunState]:
    """The starting weights and run state: a resumed checkpoint's, or ``params`` (default
    ``init_params``) at step 0 with an empty history."""
    if loaded is not None:
        ckpt, state = loaded
        state.history.update(header)
        return ckpt.params, state
    if params is None:
        params = init_params(model_config, train_config.seed, train_config.dtype)
    empty: dict[str, list[Any]] = {"epochs": [], "step_loss": [], "step_grad_norm": [],
                                   "step_lr": [], "step_seconds": []}  # fmt: skip
    return params, RunState(history={**header, **empty})


@dataclass
class _Run:
    """A run in progress: what changes from step to step and where it is saved."""

    backend: Trainable
    corpus: Corpus
    model_config: ModelConfig
    train_config: TrainConfig
    batches: CharBatches
    out: Path | None  # the run directory, or None to write nothing
    state: RunState
    tensors: Any  # the backend's parameters, kept as its tensors between steps
    optimizer: Optimizer
    schedule: Schedule
    peak_lr: float  # the schedule's rate after the warmup
    # The optimizer's state as tensors; None after a step of a backend that keeps none (a plain
    # SGD participant: StepResult.opt_state defaults to None), and the next step starts afresh.
    opt_state: OptState | None
    carry: Any = None  # the backend's state after the last step (used when batches carry it)
    on_step: Callable[[int, float, float], None] | None = None
    checkpoint_every: int | None = None
    last_saved: int | None = None  # the step of the checkpoint on disk that this run wrote
    log: RunLog | None = None  # progress, metrics.csv and TensorBoard (see .runlog)

    def save(self) -> None:
        """Write the training checkpoint and the history (nothing without an output directory)."""
        if self.out is None:
            return
        if self.log is not None:
            self.log.flush()  # metrics.csv must hold every row before the checkpoint
        carry = self.carry if self.batches.carries_state else None
        save_run(self.out, self.backend, self.tensors, carry, self.opt_state, self.corpus,
                 self.model_config, self.train_config, self.batches, self.state)  # fmt: skip
        self.last_saved = self.state.step

    def train_epoch(self, epoch: int) -> None:
        """The rest of ``epoch``'s training batches (all of them unless resumed mid-epoch), with
        checkpoints every ``checkpoint_every`` steps, then the epoch's perplexities."""
        if epoch != self.state.epoch:
            self.state.new_epoch(epoch)
            self.carry = None
        for index, (X, Y) in enumerate(self.batches.train_batches(epoch)):
            if index < self.state.batch:
                continue  # done before the checkpoint this run resumed from
            self._step(epoch, index, X, Y)
            if self.checkpoint_every is not None and self.state.step % self.checkpoint_every == 0:
                self.save()
        self._record_epoch(epoch)

    def _step(self, epoch: int, index: int, X: np.ndarray, Y: np.ndarray) -> float:
        """One update on batch ``index`` (X, Y: (B, T) ids), recorded in the meter and history;
        returns its loss. A non-finite loss or gradient norm raises before anything is kept."""
        lr = self.schedule.lr(self.peak_lr, self.state.step)
        t0 = time.perf_counter()
        # A diverging step overflows; the check below reports it with its step, so NumPy's own
        # overflow warnings (the oracle's) would only be noise.
        with np.errstate(over="ignore", invalid="ignore"):
            res = self.backend.train_step(
                self.tensors,
                X,
                Y,
                self.carry if self.batches.carries_state else None,
                lr=lr,
                grad_clip=self.train_config.grad_clip,
                optimizer=self.optimizer,
                opt_state=self.opt_state,
            )
        seconds = time.perf_counter() - t0
        if not (math.isfinite(res.loss) and math.isfinite(res.grad_norm)):
            raise self._diverged(res, epoch)
        self.tensors, self.carry, self.opt_state = res.params, res.state, res.opt_state
        state = self.state
        state.meter.add(res.loss, X.size)
        state.history["step_loss"].append(res.loss)
        state.history["step_grad_norm"].append(res.grad_norm)
        state.history.setdefault("step_lr", []).append(lr)  # absent from older checkpoints
        state.history["step_seconds"].append(seconds)
        if self.log is not None:
            self.log.step(state.step, epoch, res.loss, res.grad_norm, lr)
        if self.on_step is not None:
            self.on_step(state.step, res.loss, seconds)
        state.step += 1
        state.batch = index + 1
        return res.loss

    def _diverged(self, res: StepResult, epoch: int) -> NonFiniteError:
        kept = (
            f"; the last good checkpoint (step {self.last_saved}) is in "
            f"{str(self.out / CHECKPOINT_DIR)!r}"
            if self.out is not None and self.last_saved is not None
            else ""
        )
        return NonFiniteError(
            f"step {self.state.step} (epoch {epoch}) produced a non-finite "
            f"{'loss' if not math.isfinite(res.loss) else 'gradient'} "
            f"(loss={res.loss}, grad norm={res.grad_norm}){kept}; lower --lr or keep "
            "clipping on"
        )

    def _record_epoch(self, epoch: int) -> None:
        """Append the epoch's training and validation perplexities to the history."""
        train_ppl = self.state.meter.result()
        val_ppl = evaluate(
            self.backend, self.tensors, self.batches.val_batches(), self.batches.carries_state
        )
        record = {
            "epoch": epoch + 1,
            "train_ppl": train_ppl.token,
            "train_ppl_book": train_ppl.book,
            "val_ppl": val_ppl.token,
            "val_ppl_book": val_ppl.book,
        }
        self.state.history["epochs"].append(record)
        if self.log is not None:
            self.log.epoch(self.state.step - 1, record)

    def finish(self) -> TrainResult:
        """Score the test split once (see :func:`_test_record`), mark the run finished, write
        its last checkpoint and return the result."""
        test = _test_record(self.backend, self.tensors, self.batches)
        if test is not None:
            self.state.history["test"] = test
        self.state.new_epoch(self.train_config.max_epochs)
        self.carry = None
        final = self.backend.export(self.tensors)
        self.save()
        where = self.out / CHECKPOINT_DIR if self.out is not None else None
        return TrainResult(final, self.state.history, checkpoint=where, tensors=self.tensors)


def _test_record(backend: Trainable, tensors: Any, batches: CharBatches) -> dict[str, Any] | None:
    """The final weights' perplexity on the test split, measured exactly as validation is
    (``{"test_ppl", "test_ppl_book", "test_tokens"}``), or None without a test split. It is
    computed after the last epoch and read by nothing that trains or chooses."""
    if not batches.num_test:
        return None
    ppl = evaluate(backend, tensors, batches.test_batches(), batches.carries_state)
    return {"test_ppl": ppl.token, "test_ppl_book": ppl.book, "test_tokens": ppl.tokens}


def _disk_full(exc: DiskFullError, out: Path, saved: int | None) -> DiskFullError:
    """``exc`` (a log or history file could not be written) with what the user resumes from."""
    kept = (f"the checkpoint of step {saved} in {str(out / CHECKPOINT_DIR)!r} is intact"
            if saved is not None else "no checkpoint of this run was written yet")  # fmt: skip
    return DiskFullError(f"{exc}, then resume; {kept}", about_run=True)


def train(
    backend: Trainable,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    params: dict[str, np.ndarray] | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    *,
    checkpoint_every: int | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    baselines: bool = False,
) -> TrainResult:
    """Train from ``init_params(model_config, seed)`` (or ``params``) and return the result.

    Arguments:
        train_config: its optimizer, lr, schedule and warmup left None take the cell's defaults
            (:meth:`TrainConfig.resolved`); the history and checkpoints record the values used.
        backend: built for ``train_config.dtype`` (``get_backend(name, dtype=...)``).
        out_dir: where ``history.json`` and ``checkpoint/`` go (nothing written if None). A
            checkpoint is written at step 0, every ``checkpoint_every`` steps and at the end.
        progress: a progress bar on stderr (True), nothing (False), or by default a bar when
            stderr is a terminal and else one line per epoch. With ``out_dir``, ``metrics.csv``
            and (with tensorboard installed) TensorBoard events are written too (see
            :mod:`rnn_backends.runlog`).
        on_step: called as ``on_step(step, loss, seconds)`` after every update.
        checkpoint_every: steps between checkpoints (None: only at the start and the end).
        resume: a checkpoint (or run) directory to continue from; the run then ends with the
            weights and history an uninterrupted run would have had. Its model, vocabulary,
            corpus and training config must be these (``max_epochs`` may grow).
        overwrite: replace a checkpoint of another run found in ``out_dir`` (else refused).
        baselines: also fit the n-gram baselines on this run's training text and score them on
            its validation and test splits (:func:`rnn_backends.baselines.baselines`; a second
            or two on the Time Machine); the history holds them as ``"baselines"``.
    Raises:
        NonFiniteError: a loss or gradient norm became NaN/Inf (the step is named); the
            checkpoint on disk is then the last good one.
        ConfigError: the backend's dtype is not ``train_config.dtype``, or a bad argument.
        CheckpointError: ``resume`` is corrupted or belongs to another model, corpus or config.
        ConfigError: also when the model and a step cannot fit in the memory available
            (:func:`.memory.check_fits`; checked before anything is allocated or created).
        UserError: ``out_dir`` holds another run's checkpoint or files this package did not
            write, or cannot be created.
        FolderInUseError: another process is writing into ``out_dir``.
    """
    _check_arguments(backend, model_config, train_config, params, resume, checkpoint_every)
    train_config = train_config.resolved(model_config)
    resume_dir = find_checkpoint(resume) if resume is not None else None
    # Loaded first, so that a checkpoint of another model says so.
    loaded = load_run(resume_dir, corpus, model_config, train_config) if resume_dir else None
    if model_config.vocab_size != len(corpus.vocab):
        raise UserError(
            f"model vocab_size={model_config.vocab_size} but the corpus vocabulary has "
            f"{len(corpus.vocab)} tokens"
        )
    batches = CharBatches(corpus.ids, train_config)
    check_fits(model_config, train_config, batches.num_train)  # before anything is allocated
    # Only now, with every input checked, is the output directory created (and held).
    with _open_output(out_dir, resume_dir, overwrite) as out:
        header = _history_header(backend, corpus, model_config, train_config)
        if baselines:
            header["baselines"] = fit_baselines(corpus, train_config).to_dict()
        start, state = _initial_state(header, model_config, train_config, params, loaded)
        tensors, optimizer = backend.prepare(start), train_config.optimizer_spec()
        opt_state = (backend.init_opt_state(optimizer, tensors) if state.opt_state is None
                     else backend.prepare_opt_state(state.opt_state))  # fmt: skip
        schedule = train_config.schedule_spec(batches.total_train_batches())
        peak_lr = float(train_config.lr or 0.0)
        run = _Run(backend, corpus, model_config, train_config, batches, out, state, tensors,
                   optimizer, schedule, peak_lr, opt_state,
                   carry=carry_to_tensors(backend, state.carry), on_step=on_step,
                   checkpoint_every=checkpoint_every)  # fmt: skip
        n_batches = batches.num_train_batches()
        resumed = resume_dir.parent if resume_dir and resume_dir.name == CHECKPOINT_DIR else None
        if resume_dir is not None and out is not None and (
            (out / CHECKPOINT_DIR).resolve() == resume_dir.resolve()
        ):
            run.last_saved = state.step
        try:
            with RunLog(out, backend.name, n_batches, train_config.max_epochs, progress,
                        state.history, lr=lambda step: schedule.lr(peak_lr, step),
                        source=resumed) as run.log:  # fmt: skip
                if resume_dir is None:
                    run.save()  # step 0: the folder now belongs to this run, and a kill resumes
                for epoch in range(state.epoch, train_config.max_epochs):
                    run.train_epoch(epoch)
                return run.finish()
        except DiskFullError as exc:
            if exc.about_run or out is None:
                raise
            raise _disk_full(exc, out, run.last_saved) from exc
