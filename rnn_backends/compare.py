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
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .backends.registry import BACKENDS, canonical_name, get_backend, is_installed
from .checkpointing import load_checkpoint, write_json
from .config import ModelConfig, TrainConfig
from .data.batching import CharBatches
from .data.corpus import load_corpus
from .errors import UserError
from .generate import generate
from .params import init_params
from .report import write_report
from .train import evaluate, train
from .workers import launch

ORACLE = "numpy"

# How far a framework may be from the oracle before the job fails. float64 is exact arithmetic up
# to rounding order; float32 rounding is amplified along a training run, so the trajectory bound is
# looser than the one-step bound (both are far below any real bug: a skipped clip, a relu cell or
# a frozen layer move the loss by 1e-2 or more within a few steps).
TOLERANCES = {
    "float64": {"grad": 1e-10, "loss": 1e-9, "ppl": 1e-9},
    "float32": {"grad": 1e-5, "loss": 1e-4, "ppl": 1e-4},
}

PRESETS: dict[str, dict[str, Any]] = {
    # Small enough that the whole job takes a couple of minutes on a 2-core CPU.
    "quick": dict(
        hidden_size=32,
        batch_size=256,
        num_steps=32,
        lr=1.0,
        max_epochs=15,
        grad_clip=1.0,
        num_train=10000,
        num_val=5000,
    ),
    # The textbook's own setup (use with --corpus timemachine).
    "textbook": dict(
        hidden_size=32,
        batch_size=1024,
        num_steps=32,
        lr=1.0,
        max_epochs=100,
        grad_clip=1.0,
        num_train=10000,
        num_val=5000,
    ),
}


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

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.train)


def _read_spec(out: Path) -> Spec:
    return Spec(**json.loads((out / "spec.json").read_text()))


# --- worker ------------------------------------------------------------------------------------


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
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    if phase == "train":
        _train_phase(backend, corpus, model_config, train_config, spec, folder)
    else:
        _interchange_phase(backend, corpus, train_config, spec, out, folder)


def _train_phase(backend, corpus, model_config, train_config, spec, folder: Path) -> None:
    batches = CharBatches(corpus.ids, train_config)
    params0 = init_params(model_config, train_config.seed, train_config.dtype)
    X0, Y0 = next(batches.train_batches(0))
    loss0, grads0 = backend.loss_and_grads(params0, X0, Y0)
    np.savez(folder / "grads0.npz", **grads0)

    t0 = time.perf_counter()
    result = train(
        backend, corpus, model_config, train_config, out_dir=folder, progress=None, overwrite=True
    )  # the report is regenerated whole on every run
    wall = time.perf_counter() - t0
    seconds = result.history["step_seconds"]
    steady = seconds[1:] or seconds
    tokens = train_config.batch_size * train_config.num_steps
    greedy = generate(backend, result.tensors, corpus.vocab, spec.prefix, spec.num_preds)
    sampled = generate(
        backend,
        result.tensors,
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
        "device": backend.device,
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
        "greedy_text": greedy,
        "sampled_text": sampled,
    }
    write_json(folder / "record.json", record)


def _interchange_phase(backend, corpus, train_config, spec, out: Path, folder: Path) -> None:
    """Load every framework's checkpoint; report validation perplexity and greedy text."""
    batches = CharBatches(corpus.ids, train_config)
    rows = {}
    for source in sorted(p.parent.parent.name for p in out.glob("*/checkpoint/checkpoint.json")):
        ckpt = load_checkpoint(out / source / "checkpoint")
        native = backend.prepare(ckpt.params)
        ppl = evaluate(backend, native, batches.val_batches(), batches.carries_state)
        text = generate(backend, native, ckpt.vocab, spec.prefix, spec.num_preds)
        rows[source] = {"val_ppl": ppl.token, "greedy_text": text}
    write_json(folder / "interchange.json", rows)


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
) -> dict[str, Any]:
    """Run every worker (oracle first), then write the report. Returns the report data.

    Each framework's training shows its progress on standard error, in this process or in its
    worker process (which inherits standard error): a bar on a terminal, else one line per epoch
    named after the framework.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create report directory {str(out)!r}: {exc.strerror}") from None
    pythons = pythons or {}
    names = [ORACLE, *[canonical_name(f) for f in frameworks if canonical_name(f) != ORACLE]]
    # Check the run is valid (corpus, sizes) before starting any process.
    corpus = load_corpus(spec.corpus)
    CharBatches(corpus.ids, spec.train_config())
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
            if not ok:
                status[name] = f"failed in {phase}: {why}"
            else:
                status.setdefault(name, "ok")
    wall = time.perf_counter() - t_start
    return write_report(out, judge(out, names, status, spec, wall), oracle=ORACLE)


def default_spec(
    corpus: str = "default",
    preset: str = "quick",
    overrides: dict[str, Any] | None = None,
    variant: str | None = None,
    device: str | None = None,
    dtype: str = "float64",
    prefix: str = "the clock",
    num_preds: int = 40,
) -> Spec:
    """The run spec: the preset's values, then ``dtype``, then the ``overrides`` that are not
    None; each value goes to the ModelConfig or TrainConfig field of its name."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = {**PRESETS[preset], "dtype": dtype}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model = ModelConfig.from_dict(
        {"vocab_size": len(load_corpus(corpus).vocab),
         **{k: v for k, v in values.items() if k in model_fields}}
    )  # fmt: skip
    train_config = TrainConfig.from_dict({k: v for k, v in values.items() if k not in model_fields})
    return Spec(
        corpus=corpus,
        model=model.to_dict(),
        train=train_config.to_dict(),
        variant=variant,
        device=device,
        prefix=prefix,
        num_preds=num_preds,
        temperature=0.8,
        sample_seed=0,
    )


# --- the verdict -------------------------------------------------------------------------------


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (one number per tensor, any shape)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b))) / scale if scale > 0 else float(np.max(np.abs(a - b)))


def _grad_diff(folder: Path, oracle_folder: Path) -> tuple[float, str]:
    with np.load(folder / "grads0.npz") as g, np.load(oracle_folder / "grads0.npz") as o:
        diffs = {k: rel_diff(g[k], o[k]) for k in o.files}
    worst = max(diffs, key=lambda k: diffs[k])
    return diffs[worst], worst


def _against_oracle(row: dict[str, Any], oracle: dict[str, Any], out: Path,
                    tol: dict[str, float]) -> list[str]:
    """Add the differences to the oracle's run to ``row`` (same number of steps); return the
    departures beyond ``tol``."""
    name = row["backend"]
    ours, ref = np.array(row["step_loss"]), np.array(oracle["step_loss"])
    loss_diff = np.abs(ours - ref) / np.abs(ref)
    worst_step = int(np.argmax(loss_diff))
    row["loss_diff"] = float(loss_diff[worst_step])
    row["loss_diff_step"] = worst_step
    row["grad_diff"], row["grad_diff_param"] = _grad_diff(out / name, out / ORACLE)
    val, val_ref = row["epochs"][-1]["val_ppl"], oracle["epochs"][-1]["val_ppl"]
    row["val_ppl_diff"] = abs(val - val_ref) / val_ref
    failures = []
    if not row["grad_diff"] <= tol["grad"]:
        failures.append(
            f"{name}: step-0 gradient of {row['grad_diff_param']} differs from the oracle by "
            f"{row['grad_diff']:.2e} (relative; tolerance {tol['grad']:.0e})"
        )
    if not row["loss_diff"] <= tol["loss"]:
        failures.append(
            f"{name}: training loss differs from the oracle at step {worst_step} by "
            f"{row['loss_diff']:.2e} (relative; tolerance {tol['loss']:.0e})"
        )
    if not row["val_ppl_diff"] <= tol["ppl"]:
        failures.append(f"{name}: final validation perplexity {val:.6f} vs oracle {val_ref:.6f}")
    if row["dtype"] == "float64" and row["greedy_text"] != oracle["greedy_text"]:
        failures.append(f"{name}: greedy text differs from the oracle's")
    return failures


def _interchange_against_oracle(row: dict[str, Any], oracle_x: dict[str, Any],
                                tol: dict[str, float]) -> list[str]:
    """Departures when ``row``'s framework evaluates every framework's checkpoint."""
    name, failures = row["backend"], []
    for source, got in row["interchange"].items():
        ref_x = oracle_x.get(source)
        if ref_x is None:
            continue
        if not abs(got["val_ppl"] - ref_x["val_ppl"]) <= tol["ppl"] * ref_x["val_ppl"]:
            failures.append(
                f"{name}: loading {source}'s checkpoint gives validation perplexity "
                f"{got['val_ppl']:.6f}, the oracle gets {ref_x['val_ppl']:.6f}"
            )
        if row["dtype"] == "float64" and got["greedy_text"] != ref_x["greedy_text"]:
            failures.append(f"{name}: greedy text from {source}'s checkpoint differs")
    return failures


def compare_records(
    out: Path, names: list[str], status: dict[str, str], tol: dict[str, float]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Per framework: its record plus differences to the oracle, and a list of failures."""
    oracle = _load(out / ORACLE / "record.json")
    oracle_x = _load(out / ORACLE / "interchange.json") or {}
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
        if oracle is None or name == ORACLE:
            continue
        steps, oracle_steps = len(rec["step_loss"]), len(oracle["step_loss"])
        if steps != oracle_steps:
            failures.append(f"{name}: {steps} steps recorded, the oracle has {oracle_steps}")
            continue
        failures += _against_oracle(row, oracle, out, tol)
        failures += _interchange_against_oracle(row, oracle_x, tol)
    return rows, failures


def judge(
    out: Path, names: list[str], status: dict[str, str], spec: Spec, wall: float
) -> dict[str, Any]:
    """The verdict on a finished run: every framework's row and every departure from the oracle
    beyond :data:`TOLERANCES`. This is what the report renders (and ``report.json`` holds)."""
    tol = TOLERANCES[spec.train["dtype"]]
    rows, failures = compare_records(out, names, status, tol)
    if len(names) > 1 and not any(status.get(n) == "ok" for n in names if n != ORACLE):
        failures.append("no framework could run; install one or pass --python NAME=PATH")
    return {
        "spec": dataclasses.asdict(spec),
        "tolerance": tol,
        "wall_s": wall,
        "frameworks": rows,
        "failures": failures,
        "passed": not failures,
    }


__all__ = [
    "ORACLE",
    "PRESETS",
    "TOLERANCES",
    "Spec",
    "compare_records",
    "default_spec",
    "judge",
    "rel_diff",
    "run_compare",
    "run_worker",
]
