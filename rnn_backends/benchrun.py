"""The benchmark's orchestrator: what to measure, and one worker per framework.

Each framework runs ``python -m rnn_backends.bench`` (:mod:`rnn_backends.bench`, the measuring)
in its own interpreter, through :mod:`rnn_backends.workers`; workers run one after another, never
in parallel, and each writes ``OUT/<framework>.json``. ``benchmarks/assemble.py`` turns those
files into ``results.md`` and plots. Nothing here measures, so the command line can import it
without starting anything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import stock
from .checkpointing import write_json
from .workers import WorkerOutcome, launch

VARIANTS = ("textbook", "concat", "fast", "native")
"""The package's variants; ``stock`` (every stock path of the framework) and ``stock:<name>``
(:mod:`rnn_backends.stock`) select the stock baselines."""
TEXTBOOK = {"V": 28, "H": 32, "B": 1024, "T": 32}
"""The textbook's configuration: vocabulary V, hidden units H, batch B, time steps T."""
LARGE = {"V": 28, "H": 256, "B": 512, "T": 128}
"""A GPU-sized configuration (the GPU preset's second one)."""
SWEEPS = {
    "T": (16, 32, 64, 128, 256),
    "H": (32, 64, 128, 256, 512),
    "B": (64, 256, 1024, 4096),
}


@dataclass(frozen=True)
class Preset:
    variants: tuple[str, ...]
    sweeps: tuple[str, ...]
    steps: int
    extra: tuple[dict[str, int], ...] = ()  # configurations beyond the textbook's and sweeps
    whole_run: bool = False  # also time the book's whole 100-epoch run (bench.whole_run)


PRESETS = {
    # the default `nox -s bench` run: every variant and stock path at the textbook configuration
    "quick": Preset((*VARIANTS, "stock"), (), 10, whole_run=True),
    "sweep": Preset(("fast", "native"), ("T", "H", "B"), 5),
    "full": Preset((*VARIANTS, "stock"), ("T", "H", "B"), 10, whole_run=True),
    # the default on a GPU: the fast step against the cuDNN layer (torch native, stock:layer)
    # and JAX's compiled stock paths; torch.compile is left out (minutes of compiling per shape)
    "gpu": Preset(("fast", "native", "stock:layer", "stock:scan"), (), 20, (LARGE,)),
}


def framework_variants(framework: str, variants: Sequence[str]) -> list[str]:
    """``variants`` for one framework: ``stock`` expands to its stock paths, and stock paths it
    lacks are dropped (JAX has no eager ``stock:book``; only JAX has ``stock:scan``)."""
    have = stock.paths(framework)
    out: list[str] = []
    for v in variants:
        if v == "stock":
            out += have
        elif not stock.is_stock(v) or v in have:
            out.append(v)
    return list(dict.fromkeys(out))


def configs(sweeps: Sequence[str], extra: Sequence[dict[str, int]] = ()) -> list[dict[str, int]]:
    """The textbook configuration, then each sweep around it (one dimension varied at a time),
    then ``extra``."""
    out = [dict(TEXTBOOK)]
    for dim in sweeps:
        for value in SWEEPS[dim]:
            cfg = {**TEXTBOOK, dim: value}
            if cfg not in out:
                out.append(cfg)
    return out + [dict(c) for c in extra if c not in out]


def run(
    out: Path,
    pythons: dict[str, str],
    frameworks: Sequence[str],
    *,
    preset: str | None = None,
    variants: Sequence[str] | None = None,
    sweeps: Sequence[str] | None = None,
    steps: int | None = None,
    warmup: int = 3,
    dtype: str = "float32",
    device: str | None = "cpu",
    threads: int | None = 1,
    jax_unroll: int | None = None,
) -> dict[str, WorkerOutcome]:
    """Run every framework's worker in turn (in ``pythons[fw]``, else this interpreter); each
    writes ``out/<fw>.json``. Returns how each worker ended.

    ``preset`` defaults to ``gpu`` on a GPU and ``quick`` elsewhere. On a GPU each variant runs
    in a worker of its own, so that its device-memory peak is its own (JAX keeps one peak per
    process); their results are merged into the one file.
    """
    gpu = device in ("gpu", "cuda")
    chosen = PRESETS[preset or ("gpu" if gpu else "quick")]
    cfgs = configs(chosen.sweeps if sweeps is None else sweeps, chosen.extra)
    out.mkdir(parents=True, exist_ok=True)
    outcomes = {}
    for fw in frameworks:
        python = pythons.get(fw, sys.executable)
        mine = framework_variants(fw, variants or chosen.variants)
        options = {"unroll": jax_unroll} if fw == "jax" and jax_unroll else {}
        base = ["-m", "rnn_backends.bench", "--framework", fw, "--configs", json.dumps(cfgs),
                "--steps", str(steps or chosen.steps), "--warmup", str(warmup), "--dtype", dtype,
                "--threads", str(threads or 0), "--options", json.dumps(options)]
        base += ["--device", device] if device else []
        print(f"{fw}: {python}", file=sys.stderr, flush=True)
        groups = [[v] for v in mine] if gpu else [mine]
        parts = [out / f".{fw}.part{k}.json" for k in range(len(groups))]
        results = [launch(python, [*base, "--variants", ",".join(group), "--json", str(part),
                                   *(["--whole-run"] if chosen.whole_run and k == 0 else [])],
                          threads=threads)
                   for k, (group, part) in enumerate(zip(groups, parts, strict=True))]
        outcomes[fw] = next((r for r in results if not r.ok), results[0])
        _merge(parts, out / f"{fw}.json")
    return outcomes


def _merge(parts: list[Path], target: Path) -> None:
    """One worker file from the parts that were written (rows and errors concatenated, in
    order); the parts are deleted."""
    runs = [json.loads(p.read_text()) for p in parts if p.is_file()]
    if not runs:
        return
    merged = runs[0]
    for run_ in runs[1:]:
        merged["results"] += run_["results"]
        merged["errors"] += run_["errors"]
    write_json(target, merged)
    for p in parts:
        p.unlink(missing_ok=True)


__all__ = ["LARGE", "PRESETS", "SWEEPS", "TEXTBOOK", "VARIANTS", "Preset", "configs",
           "framework_variants", "run"]
