"""The main job: train the same model in every framework and compare them with the oracle.

Each framework may live in its own Python environment (MXNet 1.9.1 needs numpy < 1.24, JAX and
TensorFlow need numpy 2), so the work is split in two kinds of process that talk through files:

* a *worker* (``rnn-backends compare-worker``) runs inside one framework's environment: it trains
  from the shared initial weights on the shared batches, records every step, the step-0
  gradients, timings and generated text, and writes a checkpoint; in a second phase it loads every
  framework's checkpoint and reports the validation perplexity and greedy text it gets from them;
* the *orchestrator* (``rnn-backends compare``) writes the run spec, starts the workers (in this
  process's Python, or in the interpreter given per framework with ``--python NAME=PATH``), then
  compares every record with the oracle's and writes ``report.md``, ``report.json`` and plots.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .backends.registry import BACKENDS, FRAMEWORKS, canonical_name, get_backend, is_installed
from .config import ModelConfig, TrainConfig
from .data.batching import CharBatches
from .data.corpus import load_corpus
from .errors import UserError
from .generate import generate
from .params import init_params, load_checkpoint
from .train import evaluate, train

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


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


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
    greedy = generate(backend, result.native, corpus.vocab, spec.prefix, spec.num_preds)
    sampled = generate(
        backend,
        result.native,
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
    _write_json(folder / "record.json", record)


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
    _write_json(folder / "interchange.json", rows)


# --- orchestrator ------------------------------------------------------------------------------


def _run_worker_process(name: str, python: str | None, out: Path, phase: str) -> tuple[bool, str]:
    if python is None:
        try:
            run_worker(name, out, phase)
            return True, ""
        except Exception as exc:  # a framework's failure is a finding for the report
            return False, f"{type(exc).__name__}: {exc}"
    cmd = [
        python,
        "-m",
        "rnn_backends",
        "compare-worker",
        "--backend",
        name,
        "--out",
        str(out),
        "--phase",
        phase,
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True)
    if proc.returncode != 0:
        return False, f"worker exited with status {proc.returncode} ({' '.join(cmd)})"
    return True, ""


def run_compare(
    out: str | Path,
    frameworks: list[str],
    spec: Spec,
    pythons: dict[str, str] | None = None,
    log=print,
) -> dict[str, Any]:
    """Run every worker (oracle first), then write the report. Returns the report data."""
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
    _write_json(out / "spec.json", dataclasses.asdict(spec))
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
    from .report import write_report

    return write_report(out, names, status, spec, wall)


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
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    vocab_size = len(load_corpus(corpus).vocab)
    model = ModelConfig(
        vocab_size=vocab_size,
        hidden_size=values.pop("hidden_size"),
        cell=values.pop("cell", "rnn"),
        num_layers=values.pop("num_layers", 1),
    )
    train_config = TrainConfig(dtype=dtype, **values)
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


def perplexity_ok(a: float, b: float, tol: float) -> bool:
    return math.isfinite(a) and abs(a - b) <= tol * abs(b)


__all__ = [
    "FRAMEWORKS",
    "PRESETS",
    "TOLERANCES",
    "Spec",
    "default_spec",
    "run_compare",
    "run_worker",
]
