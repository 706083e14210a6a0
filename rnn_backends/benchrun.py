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
from pathlib import Path

from .workers import WorkerOutcome, launch

VARIANTS = ("textbook", "concat", "fast", "native")
TEXTBOOK = {"V": 28, "H": 32, "B": 1024, "T": 32}
"""The textbook's configuration: vocabulary V, hidden units H, batch B, time steps T."""
SWEEPS = {
    "T": (16, 32, 64, 128, 256),
    "H": (32, 64, 128, 256, 512),
    "B": (64, 256, 1024, 4096),
}
# Presets: (variants, sweeps, timed steps). "quick" is the default `nox -s bench` run.
PRESETS = {
    "quick": (VARIANTS, (), 10),
    "sweep": (("fast", "native"), ("T", "H", "B"), 5),
    "full": (VARIANTS, ("T", "H", "B"), 10),
}


def configs(sweeps: Sequence[str]) -> list[dict[str, int]]:
    """The textbook configuration, then each sweep around it (one dimension varied at a time)."""
    out = [dict(TEXTBOOK)]
    for dim in sweeps:
        for value in SWEEPS[dim]:
            cfg = {**TEXTBOOK, dim: value}
            if cfg not in out:
                out.append(cfg)
    return out


def run(
    out: Path,
    pythons: dict[str, str],
    frameworks: Sequence[str],
    *,
    preset: str = "quick",
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
    writes ``out/<fw>.json``. Returns how each worker ended."""
    p_variants, p_sweeps, p_steps = PRESETS[preset]
    variants = list(variants or p_variants)
    sweeps = list(p_sweeps if sweeps is None else sweeps)
    out.mkdir(parents=True, exist_ok=True)
    outcomes = {}
    for fw in frameworks:
        python = pythons.get(fw, sys.executable)
        options = {"unroll": jax_unroll} if fw == "jax" and jax_unroll else {}
        args = ["-m", "rnn_backends.bench", "--framework", fw, "--variants", ",".join(variants),
                "--configs", json.dumps(configs(sweeps)), "--steps", str(steps or p_steps),
                "--warmup", str(warmup), "--dtype", dtype, "--threads", str(threads or 0),
                "--options", json.dumps(options), "--json", str(out / f"{fw}.json")]
        if device:
            args += ["--device", device]
        print(f"{fw}: {python}", file=sys.stderr, flush=True)
        outcomes[fw] = launch(python, args, threads=threads)
    return outcomes


__all__ = ["PRESETS", "SWEEPS", "TEXTBOOK", "VARIANTS", "configs", "run"]
