"""The main job: train the same model in every framework and compare them with the oracle.

Each framework may live in its own Python environment (MXNet 1.9.1 needs numpy < 1.24, JAX and
TensorFlow need numpy 2), so the work is split in two kinds of process that talk through files:

* a *worker* (``rnn-backends compare-worker``) runs inside one framework's environment: it trains
  from the shared initial weights on the shared batches, records every step, the step-0
  gradients, timings and generated text, and writes a checkpoint; in a second phase it loads every
  framework's checkpoint and reports the validation perplexity and greedy text it gets from them;
* the *orchestrator* (``rnn-backends compare``) writes the run spec, runs the workers (in this
  process, or in a process of the interpreter given per framework with ``--python NAME=PATH``,
  started by :mod:`rnn_backends.workers`), then compares every record with the oracle's and
  decides the verdict (:func:`judge`); :mod:`rnn_backends.report` renders what it decided as
  ``report.md``, ``report.json`` and plots.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import numerics, optim, shadow, truth, verdict
from .backends.registry import BACKENDS, canonical_name, get_backend, is_installed
from .baselines import baselines as fit_baselines
from .checkpointing import Checkpoint, load_checkpoint, read_metadata, write_atomic, write_json
from .config import CELL_SPECS, ModelConfig, TrainConfig
from .data.batching import CharBatches
from .data.corpus import load_corpus
from .errors import UserError
from .generate import generate
from .params import init_params
from .presets import PRESET_CHECKS, PRESET_VARIANTS, PRESETS
from .report import write_report
from .runfolder import MARKER, own_folder
from .train import evaluate, train
from .truth import Initial
from .workers import launch

ORACLE = "numpy"
TRUTH = "float64-truth"  # the folder of a float32 job's float64 runs (not a framework)

# float64 results are held to fixed tolerances; float32 results to the rounding model and the
# ensemble band (rnn_backends.verdict explains both).
TOLERANCES = {"float64": dict(verdict.F64_TOLERANCES)}

@dataclasses.dataclass
class Spec:
    """Everything a worker needs to reproduce the run exactly."""

    corpus: str
    model: dict[str, Any]
    train: dict[str, Any]
    variant: str | None
    device: str | None
    prefix: str
    num_preds: int
    temperature: float
    sample_seed: int
    checks: dict[str, Any] = dataclasses.field(
        default_factory=lambda: dict(PRESET_CHECKS["quick"])
    )
    job: str = ""  # this job's id: a worker's files name it, and only this job's are read
    frameworks: list[str] = dataclasses.field(default_factory=list)  # this job's, oracle first

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.train)


def _read_spec(out: Path) -> Spec:
    return Spec(**json.loads((out / "spec.json").read_text()))


# --- worker ------------------------------------------------------------------------------------


# What a worker writes into its folder besides the training run (checkpoint/, history.json).
WORKER_FILES = {"train": ("record.json", "grads0.npz", "interchange.json"),
                "interchange": ("interchange.json",)}  # fmt: skip


def _clear_worker_files(folder: Path, phase: str) -> None:
    """Remove what an earlier job's worker wrote for ``phase`` in ``folder``, so that a phase
    that fails now cannot leave its predecessor's files to be read. Only in a folder this
    package owns (its marker), and only the files named above."""
    if not (folder / MARKER).is_file():
        return
    for name in WORKER_FILES[phase]:
        (folder / name).unlink(missing_ok=True)


def run_worker(name: str, out: Path, phase: str) -> None:
    """Run one framework's part of the job; writes under ``out/NAME/``."""
    spec = _read_spec(out)
    dtype = spec.train["dtype"]
    variant = spec.variant if name != ORACLE else None
    backend = get_backend(
        name, dtype=dtype, device=spec.device if name != ORACLE else None, variant=variant,
        gru_reset_after=spec.model_config().gru_reset_after,
    )
    corpus = load_corpus(spec.corpus)
    model_config, train_config = spec.model_config(), spec.train_config()
    if name == ORACLE:  # the oracle is one process: the reference every data-parallel run meets
        train_config = dataclasses.replace(train_config, data_parallel=1)
    folder = out / name
    _clear_worker_files(folder, phase)
    if phase == "train":
        _train_phase(backend, corpus, model_config, train_config, spec, folder)
    else:
        _interchange_phase(backend, corpus, train_config, spec, out, folder)


def _train_phase(backend, corpus, model_config, train_config, spec, folder: Path) -> None:
    batches = CharBatches(corpus.ids, train_config)
    params0 = init_params(model_config, train_config.seed, train_config.dtype)
    X0, Y0 = next(batches.train_batches(0))
    workers = train_config.data_parallel
    if workers > 1:  # on the framework's data-parallel engine, in its own processes
        from .parallel import api

        kwargs = {"variant": backend.variant, "device": spec.device,
                  "gru_reset_after": model_config.gru_reset_after}  # fmt: skip
        loss0, grads0 = api.loss_and_grads(backend.name, workers, params0, X0, Y0,
                                           backend_kwargs={**kwargs, "dtype": backend.dtype})
    else:
        loss0, grads0 = backend.loss_and_grads(params0, X0, Y0)

    total = train_config.max_epochs * batches.num_train_batches()
    steps = shadow.sampled_steps(total, int(spec.checks.get("sampled_steps", 0)))
    states = len(CELL_SPECS[model_config.cell].states)
    recorder = shadow.Recorder(backend, steps, folder / shadow.FOLDER, states=states)
    t0 = time.perf_counter()
    if workers > 1:
        # The steps run in the workers: worker 0 records the sampled ones (the global batch's
        # start and end, as one process would have them) for the float32 replays.
        result = api.train(backend.name, corpus, model_config, train_config, folder,
                           backend_kwargs=kwargs, overwrite=True,
                           record=(steps, folder / shadow.FOLDER, states))  # fmt: skip
    else:
        result = train(
            recorder, corpus, model_config, train_config, out_dir=folder, progress=None,
            overwrite=True,
        )  # the report is regenerated whole on every run; train makes the folder this package's
    wall = time.perf_counter() - t0
    # train wrote checkpoints into out_dir=folder, so its result names the last one.
    assert result.checkpoint is not None, "train with an out_dir returned no checkpoint"
    if workers == 1:
        recorder.save_index()
    buf = io.BytesIO()
    np.savez(buf, **grads0)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    write_atomic(folder / "grads0.npz", buf.getvalue())
    weights = result.tensors if result.tensors is not None else result.params
    seconds = result.history["step_seconds"]
    steady = seconds[1:] or seconds
    tokens = train_config.batch_size * train_config.num_steps
    greedy = generate(backend, weights, corpus.vocab, spec.prefix, spec.num_preds)
    sampled = generate(
        backend,
        weights,
        corpus.vocab,
        spec.prefix,
        spec.num_preds,
        temperature=spec.temperature,
        seed=spec.sample_seed,
    )
    record = {
        "backend": backend.name,
        "title": BACKENDS[backend.name].title,
        "variant": backend.variant,
        "version": backend.version(),
        "device": result.history["device"],
        "data_parallel": workers,
        "dtype": backend.dtype,
        "step0_loss": loss0,
        "step_loss": result.history["step_loss"],
        "step_grad_norm": result.history["step_grad_norm"],
        "epochs": result.history["epochs"],
        "first_step_s": seconds[0],
        "median_step_ms": 1000 * float(np.median(steady)),
        "iqr_step_ms": 1000 * float(np.subtract(*np.percentile(steady, [75, 25]))),
        "tokens_per_s": tokens / float(np.median(steady)),
        "train_wall_s": wall,
        "test": result.history.get("test"),
        "greedy_text": greedy,
        "sampled_text": sampled,
        "job": spec.job,
        "checkpoint_sha256": (read_metadata(result.checkpoint) or {}).get("params_sha256"),
    }
    write_json(folder / "record.json", record)


def _interchange_phase(backend, corpus, train_config, spec, out: Path, folder: Path) -> None:
    """Load every framework's checkpoint; report validation perplexity and greedy text."""
    batches = CharBatches(corpus.ids, train_config)
    rows = {}
    for source in sorted(spec.frameworks):
        ckpt = _job_checkpoint(out, source, spec.job)
        if ckpt is None:
            continue
        native = backend.prepare(ckpt.params)
        ppl = evaluate(backend, native, batches.val_batches(), batches.carries_state)
        text = generate(backend, native, ckpt.vocab, spec.prefix, spec.num_preds)
        rows[source] = {"val_ppl": ppl.token, "greedy_text": text}
    write_json(folder / "interchange.json", rows)


def _job_record(out: Path, name: str, job: str) -> dict[str, Any] | None:
    """``out/NAME/record.json`` if this job's worker wrote it, else None."""
    rec = _load(out / name / "record.json")
    return rec if isinstance(rec, dict) and rec.get("job") == job else None


def _job_checkpoint(out: Path, name: str, job: str) -> Checkpoint | None:
    """The checkpoint this job's training of ``name`` wrote (its SHA-256 is the one the record
    of this job names), or None when this job wrote none."""
    rec = _job_record(out, name, job)
    folder = out / name / "checkpoint"
    meta = read_metadata(folder) or {}
    if rec is None or meta.get("params_sha256") != rec.get("checkpoint_sha256"):
        return None
    return load_checkpoint(folder)  # verified against that checksum again while read


# --- orchestrator ------------------------------------------------------------------------------


def _run_worker_process(name: str, python: str | None, out: Path, phase: str) -> tuple[bool, str]:
    if python is None:
        try:
            run_worker(name, out, phase)
            return True, ""
        except Exception as exc:  # a framework's failure is a finding for the report
            return False, f"{type(exc).__name__}: {exc}"
    args = ["-m", "rnn_backends", "compare-worker", "--backend", name, "--out", str(out),
            "--phase", phase]  # fmt: skip
    outcome = launch(python, args)
    if not outcome.ok:
        return False, f"worker {outcome.describe()} ({' '.join(outcome.command)})"
    return True, ""


def _log_stderr(message: str) -> None:
    # Beside the workers' progress (standard error, inherited by worker processes), and flushed
    # so that a pipe keeps the order.
    print(message, file=sys.stderr, flush=True)


def run_compare(
    out: str | Path,
    frameworks: list[str],
    spec: Spec,
    pythons: dict[str, str] | None = None,
    log: Callable[[str], None] = _log_stderr,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Run every worker (oracle first), then write the report. Returns the report data.

    ``frameworks`` may repeat a framework or name it by an alias: each runs once. A framework
    asked for that is not installed (and has no ``pythons`` entry) fails the job, unless
    ``allow_missing``; it is then only listed as not run. The report folder is held for the
    job (see :mod:`.runfolder`), and only what this job's workers wrote is read.

    Each framework's training shows its progress on standard error, in this process or in its
    worker process (which inherits standard error): a bar on a terminal, else one line per epoch
    named after the framework.
    """
    out = Path(out)
    pythons = pythons or {}
    names = list(dict.fromkeys([ORACLE, *(canonical_name(f) for f in frameworks)]))
    # Check the run is valid (corpus, sizes) before starting any process.
    corpus = load_corpus(spec.corpus)
    CharBatches(corpus.ids, spec.train_config())
    spec = dataclasses.replace(spec, job=uuid.uuid4().hex, frameworks=names)
    with own_folder(out, "report directory"):
        return _run_jobs(out, names, spec, pythons, log, allow_missing)


def _run_jobs(out: Path, names: list[str], spec: Spec, pythons: dict[str, str], log,
              allow_missing: bool) -> dict[str, Any]:  # fmt: skip
    """Both phases of every worker, then the verdict and the report (see :func:`run_compare`)."""
    write_json(out / "spec.json", dataclasses.asdict(spec))
    status: dict[str, str] = {}
    t_start = time.perf_counter()
    for phase in ("train", "interchange"):
        for name in names:
            if status.get(name, "ok") != "ok":
                continue
            python = pythons.get(name)
            if python is None and not is_installed(name):
                status[name] = (
                    f"not installed here (pass --python {name}=PATH or use nox -s compare)"
                )
                continue
            if phase == "train":
                log(f"[{name}] training")
            ok, why = _run_worker_process(name, python, out, phase)
            if ok and phase == "train" and _job_record(out, name, spec.job) is None:
                ok, why = False, "the worker wrote no record of this job"
            if not ok:
                status[name] = f"failed in {phase}: {why}"
            else:
                status.setdefault(name, "ok")
    for name, why in status.items():
        if why.startswith("not installed") and not allow_missing:
            status[name] = f"failed: {why}; it was asked for (pass --allow-missing to skip it)"
    if spec.train["dtype"] != "float64" and status.get(ORACLE) == "ok":
        log(f"[{TRUTH}] float64 oracle and ensemble runs")
        _float64_truth(out, names, status, spec)
    log("[baselines] n-gram baselines on the same split")
    ngrams = fit_baselines(load_corpus(spec.corpus), spec.train_config()).to_dict()
    wall = time.perf_counter() - t_start
    return write_report(out, judge(out, names, status, spec, wall, ngrams), oracle=ORACLE)


def _float64_truth(out: Path, names: list[str], status: dict[str, str], spec: Spec) -> None:
    """A float32 job's float64 runs: the oracle's trajectory and the ensemble's (when the
    preset checks trajectories) and every checkpoint's validation perplexity."""
    corpus = load_corpus(spec.corpus)
    model, config = spec.model_config(), spec.train_config()
    # The reference runs are one process, whatever the frameworks' data parallelism.
    config = dataclasses.replace(config, data_parallel=1)
    folder = out / TRUTH
    folder.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if spec.checks.get("trajectory"):
        data = truth.trajectories(corpus, model, config, int(spec.checks.get("members", 1)))
    evaluated = [n for n in names if status.get(n) == "ok" and (out / n / "checkpoint").is_dir()]
    data["checkpoints"] = {
        name: dataclasses.asdict(truth.evaluate_checkpoint(out / name / "checkpoint", corpus,
                                                           model, config))  # fmt: skip
        for name in evaluated
    }
    # The same checkpoints evaluated by the ensemble's permuted members (forward passes only).
    data["checkpoint_members"] = {
        name: truth.member_evaluations(out / name / "checkpoint", corpus, model, config,
                                       int(spec.checks.get("members", 1)))  # fmt: skip
        for name in evaluated
    }
    write_json(folder / "truth.json", data)


def default_spec(
    corpus: str = "default",
    preset: str = "quick",
    overrides: dict[str, Any] | None = None,
    variant: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    prefix: str = "the clock",
    num_preds: int = 40,
) -> Spec:
    """The run spec: float64, then the preset's values, then ``dtype`` (when given), then the
    ``overrides`` that are not None; each value goes to the ModelConfig or TrainConfig field of
    its name. What is left to the cell (optimizer, lr, schedule, warmup) is resolved here, so
    the spec and the report show the values every framework trains with."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {"dtype": "float64", **PRESETS[preset]}
    if dtype is not None:
        values["dtype"] = dtype
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model = ModelConfig.from_dict(
        {"vocab_size": len(load_corpus(corpus).vocab),
         **{k: v for k, v in values.items() if k in model_fields}}
    )  # fmt: skip
    train_config = TrainConfig.from_dict(
        {k: v for k, v in values.items() if k not in model_fields}
    ).resolved(model)
    return Spec(
        corpus=corpus,
        model=model.to_dict(),
        train=train_config.to_dict(),
        variant=variant or PRESET_VARIANTS.get(preset),
        device=device,
        prefix=prefix,
        num_preds=num_preds,
        temperature=0.8,
        sample_seed=0,
        checks=dict(PRESET_CHECKS[preset]),
    )


# --- the verdict -------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (one number per tensor, any shape)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b))) / scale if scale > 0 else float(np.max(np.abs(a - b)))


@dataclasses.dataclass
class _Context:
    """What every framework of one job is judged against."""

    out: Path
    spec: Spec
    dtype: str
    model: ModelConfig
    oracle: dict[str, Any] | None  # the numpy row's record
    oracle_x: dict[str, Any]  # the numpy row's evaluation of every checkpoint
    truth: dict[str, Any]  # a float32 job's float64 runs (truth.json)
    initial: Initial | None  # a float32 job's step-0 truth

    @property
    def members(self) -> int:
        return int(self.spec.checks.get("members", 1))

    def truth_losses(self) -> np.ndarray | None:
        """The float64 oracle's per-step losses, when this job has them."""
        if self.dtype == "float64":
            return None if self.oracle is None else np.asarray(self.oracle["step_loss"])
        run = self.truth.get("float64")
        return None if run is None else np.asarray(run["step_loss"])

    def member_runs(self) -> list[dict[str, Any]]:
        """Every member's run: the float32 oracle (the numpy row) first, then the permuted."""
        if self.oracle is None or "float64" not in self.truth:
            return []
        plain = {"step_loss": self.oracle["step_loss"],
                 "val_ppl": self.oracle["epochs"][-1]["val_ppl"]}  # fmt: skip
        return [plain, *self.truth.get("members", [])]


def _step_kwargs(record: dict[str, Any], slots: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a saved step's ``train_step`` besides the batch and the state: its rate,
    clip threshold, optimizer, and the optimizer's state as saved before the step (``slots``,
    and the update count the record names)."""
    kwargs: dict[str, Any] = {"lr": record["lr"], "grad_clip": record["grad_clip"]}
    if record.get("optimizer") is not None:
        kwargs["optimizer"] = optim.Optimizer(**record["optimizer"])
        kwargs["opt_state"] = optim.OptState(int(record.get("opt_step") or 0), slots)
    return kwargs


def _step0_checks(ctx: _Context, name: str, rec: dict[str, Any]) -> list[verdict.Check]:
    """The loss and gradients at the initial weights on the first batch."""
    with np.load(ctx.out / name / "grads0.npz") as z:
        grads = {k: z[k] for k in z.files}
    if ctx.dtype == "float64":
        with np.load(ctx.out / ORACLE / "grads0.npz") as o:
            ref = {k: o[k] for k in o.files}
        checks = [verdict.tolerance_check(f"gradient of {k}", 0, grads.get(k, np.nan), ref[k],
                                          verdict.F64_TOLERANCES["grad"]) for k in ref]  # fmt: skip
        checks.append(verdict.tolerance_check("loss", 0, rec["step0_loss"],
                                              ctx.oracle["step0_loss"],  # type: ignore[index]
                                              verdict.F64_TOLERANCES["loss"]))  # fmt: skip
        return checks
    init = ctx.initial
    assert init is not None
    checks = []
    for k, exact in init.one.grads.items():
        got = grads.get(k, np.full_like(exact, np.nan))
        ratio = numerics.worst_ratio(got, exact, init.one.allowed_grads[k])
        checks.append(verdict.componentwise_check(f"gradient of {k}", 0, ratio))
        checks.append(verdict.band_check(f"gradient of {k}", 0, got, exact,
                                         [m[k] for m in init.member_grads], ctx.dtype))  # fmt: skip
    checks.append(verdict.componentwise_check("loss", 0, init.one.check_loss(rec["step0_loss"])))
    checks.append(verdict.band_check("loss", 0, rec["step0_loss"], init.one.loss,
                                     init.member_losses, ctx.dtype))  # fmt: skip
    return checks


def _replay_checks(ctx: _Context, name: str) -> tuple[list[verdict.Check], float]:
    """The saved steps of framework ``name`` replayed; returns the checks and the float32
    single-step loss band (the members' largest relative loss deviation, 0 in float64)."""
    records = shadow.load_index(ctx.out / name)
    replayed = [truth.replay(ctx.out / name, r, ctx.model, ctx.dtype, ctx.members, _step_kwargs)
                for r in records]  # fmt: skip
    states = CELL_SPECS[ctx.model.cell].states
    checks: list[verdict.Check] = []
    for rec, r in zip(records, replayed, strict=True):
        update = None
        if rec.get("optimizer") is not None:
            update = {**rec["optimizer"], "lr": rec["lr"], "step": int(rec.get("opt_step") or 0)}
        checks += verdict.step_checks(r.step, ctx.dtype, r.actual, r.truth, r.members, r.before,
                                      states, update)  # fmt: skip
    rel = lambda a, b: abs(a - b) / abs(b) if b else abs(a - b)  # noqa: E731
    loss_band = max((rel(m, r.loss) for r in replayed for m in r.member_losses), default=0.0)
    norm_band = max((rel(m, r.grad_norm) for r in replayed for m in r.member_norms), default=0.0)
    u = numerics.UNIT_ROUNDOFF[ctx.dtype]
    for rec, r in zip(records, replayed, strict=True):
        for what, actual, exact, band in (("loss", rec["loss"], r.loss, loss_band),
                                          ("gradient norm", rec["grad_norm"], r.grad_norm,
                                           norm_band)):  # fmt: skip
            if ctx.dtype == "float64":
                checks.append(verdict.tolerance_check(what, r.step, actual, exact,
                                                      verdict.F64_TOLERANCES["step"]))  # fmt: skip
            else:
                checks.append(verdict.relative_band_check(what, r.step, actual, exact, band, u))
    return checks, loss_band


def _run_checks(ctx: _Context, row: dict[str, Any], rec: dict[str, Any],
                loss_floor: float) -> list[verdict.Check]:  # fmt: skip
    """The whole run: per-step training losses and the final validation perplexity."""
    reference = ctx.truth_losses()
    if reference is None:
        return []
    band = None
    runs = ctx.member_runs()
    if ctx.dtype != "float64":
        band = verdict.Band.of(reference, [np.asarray(m["step_loss"]) for m in runs],
                               verdict.MARGIN * loss_floor)  # fmt: skip
    dev = verdict.loss_deviation(rec["step_loss"], reference)
    row["loss_diff_curve"] = dev.tolist()
    row["loss_diff_step"] = int(np.argmax(dev)) if dev.size else 0
    row["loss_diff"] = float(dev.max()) if dev.size else 0.0
    checks = [verdict.trajectory_check(rec["step_loss"], reference, band)]
    val = rec["epochs"][-1]["val_ppl"]
    if ctx.dtype == "float64":
        val_ref = ctx.oracle["epochs"][-1]["val_ppl"]  # type: ignore[index]
        checks.append(verdict.tolerance_check("final validation perplexity", None, val, val_ref,
                                              verdict.F64_TOLERANCES["ppl"]))  # fmt: skip
    else:
        val_ref = ctx.truth["float64"]["val_ppl"]
        spread = max((abs(m["val_ppl"] - val_ref) / val_ref for m in runs), default=0.0)
        checks.append(verdict.relative_band_check("final validation perplexity", None, val,
                                                  val_ref, spread, loss_floor))  # fmt: skip
    row["val_ppl_diff"] = abs(val - val_ref) / val_ref
    return checks


def _interchange_checks(ctx: _Context,
                        row: dict[str, Any]) -> tuple[list[verdict.Check], list[str]]:
    """The row's framework evaluating every framework's checkpoint; greedy text in float64."""
    checks, texts = [], []
    for source, got in sorted(row.get("interchange", {}).items()):
        ref_x = ctx.oracle_x.get(source)
        what = f"validation perplexity of {source}'s checkpoint"
        if ctx.dtype == "float64":
            if ref_x is None:
                continue
            checks.append(verdict.tolerance_check(what, None, got["val_ppl"], ref_x["val_ppl"],
                                                  verdict.F64_TOLERANCES["ppl"]))  # fmt: skip
            if got["greedy_text"] != ref_x["greedy_text"]:
                texts.append(f"greedy text from {source}'s checkpoint differs from the oracle's")
            continue
        exact = ctx.truth.get("checkpoints", {}).get(source)
        if exact is None:
            continue
        members = ([ref_x["val_ppl"]] if ref_x else []) + list(
            ctx.truth.get("checkpoint_members", {}).get(source, []))
        reduction = numerics.reduction_allowance(exact["magnitude"], exact["batch_tokens"],
                                                 exact["batches"], ctx.model.vocab_size,
                                                 ctx.dtype)  # fmt: skip
        checks.append(verdict.evaluation_check(what, got["val_ppl"], exact["val_ppl"], members,
                                               reduction))  # fmt: skip
    return checks, texts


def _messages(name: str, checks: list[verdict.Check], limit: int = 12) -> list[str]:
    """One line per quantity that failed, at its earliest failing step, earliest first; at most
    ``limit`` lines, then how many departures more (every check is in ``report.json``)."""
    failed = sorted((c for c in checks if not c.ok),
                    key=lambda c: (c.step is None, c.step or 0, -c.ratio))  # fmt: skip
    first: dict[str, verdict.Check] = {}
    for c in failed:
        first.setdefault(c.what, c)
    lines = [f"{name}: {c.describe()}" for c in list(first.values())[:limit]]
    if len(failed) > len(lines):
        lines.append(f"{name}: ... and {len(failed) - len(lines)} more departures "
                     "(report.json lists every check)")  # fmt: skip
    return lines


def _judge_framework(ctx: _Context, row: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    """Every check of one framework's run; fills ``row`` and returns the failure messages."""
    name = row["backend"]
    steps = len(rec["step_loss"])
    reference = ctx.truth_losses()
    if reference is not None and steps != len(reference):
        return [f"{name}: {steps} steps recorded, the oracle has {len(reference)}"]
    checks = _step0_checks(ctx, name, rec)
    ref = ctx.initial.one.grads if ctx.initial else _load_npz(ctx.out / ORACLE / "grads0.npz")
    grads = _load_npz(ctx.out / name / "grads0.npz")
    diffs = {k: rel_diff(grads[k], ref[k]) for k in ref if k in grads}
    if diffs:
        row["grad_diff_param"] = max(diffs, key=diffs.get)  # type: ignore[arg-type]
        row["grad_diff"] = diffs[row["grad_diff_param"]]
    replays, loss_band = _replay_checks(ctx, name)
    row["loss_floor"] = verdict.MARGIN * loss_band
    checks += replays
    checks += _run_checks(ctx, row, rec, loss_band)
    inter, texts = _interchange_checks(ctx, row)
    checks += inter
    if ctx.dtype == "float64" and rec["greedy_text"] != ctx.oracle["greedy_text"]:  # type: ignore[index]
        texts.append("greedy text differs from the oracle's")
    worst = verdict.worst(checks)
    row["checks"] = [c.to_dict() for c in checks]
    row["worst"] = worst.to_dict() if worst else None
    row["multiple"] = worst.ratio if worst else None
    return _messages(name, checks) + [f"{name}: {t}" for t in texts]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _context(out: Path, spec: Spec) -> _Context:
    dtype = spec.train["dtype"]
    model = spec.model_config()
    initial = None
    if dtype != "float64":
        corpus = load_corpus(spec.corpus)
        initial = truth.initial(corpus, model, spec.train_config(),
                                int(spec.checks.get("members", 1)))  # fmt: skip
    return _Context(out, spec, dtype, model, _load(out / ORACLE / "record.json"),
                    _load(out / ORACLE / "interchange.json") or {},
                    _load(out / TRUTH / "truth.json") or {}, initial)  # fmt: skip


def compare_records(
    out: Path, names: list[str], status: dict[str, str], spec: Spec
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per framework: its record plus its checks against the float64 oracle, and the failures.

    In float64 the numpy row is the oracle itself; in float32 it is judged like a framework."""
    ctx = _context(out, spec)
    rows, failures = [], []
    for name in names:
        rec = _load(out / name / "record.json")
        row: dict[str, Any] = {"backend": name, "status": status.get(name, "missing")}
        rows.append(row)
        if rec is None or status.get(name) != "ok":
            if name == ORACLE or not status.get(name, "").startswith("not installed"):
                failures.append(f"{name}: {status.get(name, 'no record')}")
            continue
        row.update(rec)
        row["interchange"] = _load(out / name / "interchange.json") or {}
        if ctx.oracle is None or (name == ORACLE and ctx.dtype == "float64"):
            continue
        failures += _judge_framework(ctx, row, rec)
    return rows, failures


def _trajectory_summary(out: Path, spec: Spec, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What the deviation plot draws besides each row's curve: the band and what is allowed."""
    dtype = spec.train["dtype"]
    if dtype == "float64":
        return {"allowed": verdict.F64_TOLERANCES["loss"], "band": None, "cut": None}
    data = _load(out / TRUTH / "truth.json") or {}
    oracle = next((r for r in rows if r["backend"] == ORACLE and "step_loss" in r), None)
    if "float64" not in data or oracle is None:
        return {"allowed": None, "band": None, "cut": None}
    runs = [oracle, *data.get("members", [])]
    floor = max((r.get("loss_floor", 0.0) for r in rows), default=0.0)
    band = verdict.Band.of(np.asarray(data["float64"]["step_loss"]),
                           [np.asarray(r["step_loss"]) for r in runs], floor)  # fmt: skip
    return {"band": band.band.tolist(), "cut": band.cut, "allowed": band.allowed().tolist()}


def _checked(spec: Spec) -> list[str]:
    """What this job checked, in words, for the report."""
    c = spec.checks
    if spec.train["dtype"] == "float64":
        return [
            "step-0 loss and gradients: relative 1e-10 (gradients) and 1e-9 (loss)",
            f"{c.get('sampled_steps', 0)} sampled training steps replayed in float64 from each "
            "framework's own state: 1e-9 relative to each update",
            "every per-step training loss and the final validation perplexity: 1e-9 relative",
            "every checkpoint in every framework: perplexity 1e-9 relative, greedy text equal",
        ]
    lines = [
        "step-0 loss and gradients: the componentwise rounding bound and "
        f"{verdict.MARGIN:g}x the band of {c.get('members')} ensemble members",
        f"{c.get('sampled_steps', 0)} sampled training steps replayed from each framework's own "
        f"state in float64 and by the ensemble: {verdict.MARGIN:g}x the band (an Adam step's "
        "parameters also within the bound their slots' allowances imply through the update)",
    ]
    if c.get("trajectory"):
        lines.append(
            "per-step training loss while the ensemble's band stays below "
            f"{verdict.TRAJECTORY_CUT:.0e}, and the final validation perplexity: "
            f"{verdict.MARGIN:g}x the band"
        )
    else:
        lines.append("whole trajectories: not checked by this preset")
    lines.append("every checkpoint in every framework against its float64 perplexity: "
                 f"{verdict.MARGIN:g}x the band of the members' evaluations of it plus the "
                 "rounding bound of the loss reductions")
    return lines


def quality_failures(rows: list[dict[str, Any]], ngrams: dict[str, Any] | None) -> list[str]:
    """One line per framework whose final validation or test perplexity is not below the best
    n-gram's on that split (``ngrams``: ``Baselines.to_dict()``). A preset asks for this check
    with ``"beat_ngram"``; the n-gram's order and discounts were chosen on validation."""
    best = (ngrams or {}).get("best")
    if best is None:
        return ["no n-gram baseline to beat: the job has no validation split"]
    test_best = (ngrams.get("test") or {}).get("best")  # type: ignore[union-attr]
    failures = []
    for r in rows:
        if "epochs" not in r:
            continue
        val = r["epochs"][-1]["val_ppl"]
        if not val < best["val_ppl"]:
            failures.append(f"{r['backend']}: validation perplexity {val:.4f} does not beat the "
                            f"best n-gram's {best['val_ppl']:.4f}")  # fmt: skip
        test = (r.get("test") or {}).get("test_ppl")
        if test_best is None or test is None:
            failures.append(f"{r['backend']}: no test split to compare with the best n-gram; "
                            "set num_test (--num-test) above 0")  # fmt: skip
        elif not test < test_best:
            failures.append(f"{r['backend']}: test perplexity {test:.4f} does not beat the best "
                            f"n-gram's {test_best:.4f}")  # fmt: skip
    return failures


def judge(
    out: Path, names: list[str], status: dict[str, str], spec: Spec, wall: float,
    ngrams: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdict on a finished run: every framework's row, its checks against the float64
    oracle and every failure, and the n-gram baselines (``Baselines.to_dict()``) of the same
    split. This is what the report renders (and ``report.json`` holds)."""
    rows, failures = compare_records(out, names, status, spec)
    if len(names) > 1 and not any(status.get(n) == "ok" for n in names if n != ORACLE):
        failures.append("no framework could run; install one or pass --python NAME=PATH")
    if spec.checks.get("beat_ngram"):
        failures += quality_failures(rows, ngrams)
    return {
        "baselines": ngrams,
        "spec": dataclasses.asdict(spec),
        "checked": _checked(spec),
        "trajectory": _trajectory_summary(out, spec, rows),
        "wall_s": wall,
        "frameworks": rows,
        "failures": failures,
        "passed": not failures,
    }


__all__ = [
    "ORACLE",
    "PRESETS",
    "PRESET_CHECKS",
    "TOLERANCES",
    "Spec",
    "compare_records",
    "default_spec",
    "judge",
    "quality_failures",
    "rel_diff",
    "run_compare",
    "run_worker",
]
