"""Benchmarks: one full training step per framework x variant x configuration.

A step is what :meth:`Backend.train_step` does (forward, loss, backward, clipping, SGD) and ends
with the loss as a Python float, so every framework has finished its work (GPU included) when the
clock stops. Each framework runs in a worker process of its own interpreter (its own environment);
workers run one after another, never in parallel, and write JSON; :func:`assemble` turns the
JSON files into one Markdown table and PNG plots.

    python -m rnn_backends.bench run --python torch=/venvs/torch/bin/python ... --out DIR
    python -m rnn_backends.bench assemble DIR

Timings are reported, never asserted. Achieved GFLOP/s counts the model's useful FLOPs
(:func:`step_flops`, the same for every variant) against a float32 matmul peak measured by NumPy
in the same worker process with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FRAMEWORKS = ("torch", "mxnet", "jax", "tensorflow")
VARIANTS = ("textbook", "concat", "fast", "native")
TEXTBOOK = {"V": 28, "H": 32, "B": 1024, "T": 32}
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


def step_flops(V: int, H: int, B: int, T: int) -> int:
    """Useful FLOPs of one step: 6 N H (H + V) for N = B T tokens.

    Forward: the recurrence 2NH^2 and the output layer 2NHV; backward: twice each (the gradient
    of the input and of the weight). The input projection is a row gather (no FLOPs); elementwise
    work is not counted. The one-hot variants do more arithmetic, but not more useful work.
    """
    N = B * T
    return 6 * N * H * (H + V)


def configs(sweeps: Sequence[str]) -> list[dict[str, int]]:
    """The textbook configuration, then each sweep around it (one dimension varied at a time)."""
    out = [dict(TEXTBOOK)]
    for dim in sweeps:
        for value in SWEEPS[dim]:
            cfg = {**TEXTBOOK, dim: value}
            if cfg not in out:
                out.append(cfg)
    return out


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment variables that hold every framework (and NumPy's BLAS) to ``threads``."""
    if not threads:
        return {}
    n = str(threads)
    env = {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": n,
        # MXNet's engine threads each run OpenMP kernels; with 2 engine threads and 2 OpenMP
        # threads MXNet 1.9.1 spins forever (seen here), so ops run one at a time, each using
        # OMP_NUM_THREADS threads.
        "MXNET_CPU_WORKER_NTHREADS": "1",
    }
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


# --- the worker: one framework, in its own interpreter -------------------------------------------


def matmul_peak(size: int = 1024, seconds: float = 0.5) -> float:
    """Best GFLOP/s of a float32 ``size`` x ``size`` NumPy matmul, over about ``seconds``."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        current = float("nan")
    return current, peak


class _DeviceMemory:
    """Peak device memory of a GPU run, per framework; ``None`` on the CPU."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.gpu = not str(backend.device).lower().startswith("cpu")

    def reset(self) -> None:
        if self.gpu and self.backend.name == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.gpu and self.backend.name == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_mb(self) -> float | None:
        if not self.gpu:
            return None
        name = self.backend.name
        if name == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        if name == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        if name == "jax":
            stats = self.backend._device.memory_stats() or {}
            return stats.get("peak_bytes_in_use", float("nan")) / 2**20
        if name == "mxnet":
            import mxnet as mx

            free, total = mx.context.gpu_memory_info(0)
            return (total - free) / 2**20  # MXNet reports use, not a peak
        return None


def bench_one(
    framework: str,
    variant: str,
    cfg: dict[str, int],
    *,
    dtype: str,
    device: str | None,
    warmup: int,
    steps: int,
    options: dict[str, Any],
) -> dict[str, Any]:
    """Time ``steps`` training steps after the first (compile) step and ``warmup`` more."""
    from . import ModelConfig, get_backend, init_params

    V, H, B, T = cfg["V"], cfg["H"], cfg["B"], cfg["T"]
    backend = get_backend(framework, dtype=dtype, device=device, variant=variant, **options)
    params = init_params(ModelConfig(vocab_size=V, hidden_size=H), seed=0, dtype=dtype)
    rng = np.random.default_rng(1)
    batches = [
        (rng.integers(0, V, size=(B, T)), rng.integers(0, V, size=(B, T))) for _ in range(4)
    ]
    memory = _DeviceMemory(backend)
    memory.reset()
    native = backend.prepare(params)

    def step(i: int) -> float:
        nonlocal native
        X, Y = batches[i % len(batches)]
        t0 = time.perf_counter()
        res = backend.train_step(native, X, Y, lr=1.0, grad_clip=1.0)  # float loss: synced
        elapsed = time.perf_counter() - t0
        native = res.params
        if not np.isfinite(res.loss):
            raise FloatingPointError(f"{framework}/{variant}: loss {res.loss} at {cfg}")
        return elapsed

    first = step(0)
    for i in range(warmup):
        step(i + 1)
    times = [step(i) for i in range(steps)]
    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    flops = step_flops(V, H, B, T)
    _, rss_peak = _rss_mb()
    return {
        "framework": framework,
        "variant": variant,
        "config": cfg,
        "device": backend.device,
        "version": backend.version(),
        "first_step_s": first,
        "ms_median": median,
        "ms_min": ms[0],
        "ms_q1": float(np.percentile(ms, 25)),
        "ms_q3": float(np.percentile(ms, 75)),
        "ms_max": ms[-1],
        "steps": steps,
        "tokens_per_s": B * T / (median / 1e3),
        "gflops": flops / (median / 1e3) / 1e9,
        "step_mflop": flops / 1e6,
        "rss_peak_mb": rss_peak,
        "device_peak_mb": memory.peak_mb(),
    }


def run_worker(args: argparse.Namespace) -> int:
    framework = args.framework
    if framework == "torch" and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    options = json.loads(args.options) if args.options else {}
    out: dict[str, Any] = {
        "framework": framework,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "dtype": args.dtype,
        "options": options,
        "matmul_peak_gflops": matmul_peak(),
        "results": [],
        "errors": [],
    }
    for cfg in json.loads(args.configs):
        for variant in args.variants.split(","):
            try:
                row = bench_one(framework, variant, cfg, dtype=args.dtype, device=args.device,
                                warmup=args.warmup, steps=args.steps, options=options)
            except Exception as exc:  # a variant that fails is reported, not fatal to the run
                out["errors"].append(f"{variant} {cfg}: {type(exc).__name__}: {exc}")
                print(f"  {framework} {variant} {cfg}: FAILED {exc}", file=sys.stderr)
                continue
            out["results"].append(row)
            print(f"  {framework:<10} {variant:<8} V={cfg['V']} H={cfg['H']} B={cfg['B']} "
                  f"T={cfg['T']}: {row['ms_median']:8.2f} ms/step "
                  f"[{row['ms_q1']:.2f}-{row['ms_q3']:.2f}], first {row['first_step_s']:.2f} s",
                  file=sys.stderr, flush=True)
    out["matmul_peak_gflops_after"] = matmul_peak()
    Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


# --- the orchestrator: one worker per framework, one after another -------------------------------


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
) -> dict[str, Any]:
    """Run every framework's worker in turn, then :func:`assemble`; returns the summary."""
    p_variants, p_sweeps, p_steps = PRESETS[preset]
    variants = list(variants or p_variants)
    sweeps = list(p_sweeps if sweeps is None else sweeps)
    steps = steps or p_steps
    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[1])
    for fw in frameworks:
        python = pythons.get(fw, sys.executable)
        env = {**os.environ, **thread_env(threads)}
        if (Path(root) / "pyproject.toml").is_file():
            # Running from a source checkout: let every worker import this same tree. When the
            # package is installed, root is this environment's site-packages, which must never
            # leak into another framework's environment (MXNet's needs numpy 1.23).
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        options = {"unroll": jax_unroll} if fw == "jax" and jax_unroll else {}
        cmd = [python, "-m", "rnn_backends.bench", "worker", "--framework", fw,
               "--variants", ",".join(variants), "--configs", json.dumps(configs(sweeps)),
               "--steps", str(steps), "--warmup", str(warmup), "--dtype", dtype,
               "--threads", str(threads or 0), "--options", json.dumps(options),
               "--json", str(out / f"{fw}.json")]
        if device:
            cmd += ["--device", device]
        print(f"{fw}: {python}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, env=env)
        if proc.returncode:
            print(f"{fw}: worker exited with status {proc.returncode}", file=sys.stderr)
    return assemble(out)


# --- the report ----------------------------------------------------------------------------------


def _load(out: Path) -> list[dict[str, Any]]:
    runs = []
    for fw in FRAMEWORKS:
        path = out / f"{fw}.json"
        if path.is_file():
            runs.append(json.loads(path.read_text()))
    return runs


def _key(cfg: dict[str, int]) -> str:
    return f"V={cfg['V']} H={cfg['H']} B={cfg['B']} T={cfg['T']}"


def assemble(out: Path, plots: bool = True) -> dict[str, Any]:
    """Write ``results.md`` (and PNG plots when matplotlib is present) from the workers' JSON."""
    runs = _load(out)
    rows = [r for run in runs for r in run["results"]]
    peaks = {run["framework"]: run["matmul_peak_gflops"] for run in runs}
    tb = _key(TEXTBOOK)
    lines = ["# Training-step benchmark", ""]
    if runs:
        r0 = runs[0]
        lines += [
            f"Machine: {r0['machine']}; threads per framework: {r0['threads'] or 'default'}; "
            f"dtype {r0['dtype']}; one step = forward, loss, backward, clipping, SGD; "
            "median of the timed steps after warm-up, [quartiles].",
            "",
        ]
    lines += [f"## Textbook configuration ({tb})", "",
              "| framework | variant | ms/step (median) | [q1-q3] | vs own textbook "
              "| vs own native "
              "| tokens/s | first step (s) | GFLOP/s | % of matmul peak | peak RSS (MiB) |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    summary: dict[str, Any] = {"textbook": {}}
    for fw in FRAMEWORKS:
        mine = {r["variant"]: r for r in rows if r["framework"] == fw and _key(r["config"]) == tb}
        for variant in VARIANTS:
            r = mine.get(variant)
            if r is None:
                continue
            base, nat = mine.get("textbook"), mine.get("native")
            vs_tb = f"{base['ms_median'] / r['ms_median']:.1f}x" if base else "-"
            vs_nat = f"{nat['ms_median'] / r['ms_median']:.1f}x" if nat else "-"
            peak = peaks.get(fw)
            pct = f"{100 * r['gflops'] / peak:.1f}" if peak else "-"
            lines.append(
                f"| {fw} | {variant} | {r['ms_median']:.2f} | [{r['ms_q1']:.2f}-{r['ms_q3']:.2f}]"
                f" | {vs_tb} | {vs_nat} | {r['tokens_per_s']:,.0f} | {r['first_step_s']:.2f} | "
                f"{r['gflops']:.1f} | {pct} | {r['rss_peak_mb']:.0f} |"
            )
            summary["textbook"][f"{fw}/{variant}"] = r["ms_median"]
    if summary["textbook"]:
        best = min(summary["textbook"], key=summary["textbook"].get)
        summary["fastest"] = (best, summary["textbook"][best])
        lines += ["", f"Fastest: {best} at {summary['fastest'][1]:.2f} ms/step."]
    lines += ["", "Matmul peak (NumPy float32 1024^2, same process and threads): "
              + ", ".join(f"{fw} worker {p:.0f} GFLOP/s" for fw, p in peaks.items())]
    device_rows = [r for r in rows if r.get("device_peak_mb") is not None]
    if not device_rows:
        lines += ["", "GPU: not run (no GPU in this run); device memory is reported on a GPU."]
    sweeps = [r for r in rows if _key(r["config"]) != tb]
    if sweeps:
        lines += ["", "## Sweeps (ms/step, median)", "",
                  "| framework | variant | config | ms/step | tokens/s | GFLOP/s |",
                  "|---|---|---|---:|---:|---:|"]
        for r in sorted(sweeps, key=lambda r: (r["framework"], r["variant"],
                                                tuple(r["config"].values()))):
            lines.append(f"| {r['framework']} | {r['variant']} | {_key(r['config'])} | "
                         f"{r['ms_median']:.2f} | {r['tokens_per_s']:,.0f} | {r['gflops']:.1f} |")
    errors = [f"{run['framework']}: {e}" for run in runs for e in run["errors"]]
    if errors:
        lines += ["", "## Failures", ""] + [f"- {e}" for e in errors]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if plots:
        _plots(out, rows, tb)
    return summary


def _plots(out: Path, rows: list[dict[str, Any]], tb: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install 'rnn-backends[plots]')",
              file=sys.stderr)
        return
    mine = [r for r in rows if _key(r["config"]) == tb]
    if mine:
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=90)
        labels = [f"{r['framework']}\n{r['variant']}" for r in mine]
        ax.bar(range(len(mine)), [r["ms_median"] for r in mine],
               yerr=[[r["ms_median"] - r["ms_q1"] for r in mine],
                     [r["ms_q3"] - r["ms_median"] for r in mine]],
               color=[f"C{VARIANTS.index(r['variant'])}" for r in mine])
        ax.set_xticks(range(len(mine)), labels, fontsize=6)
        ax.set_yscale("log")
        ax.set_ylabel("ms per training step (log)")
        ax.set_title(f"One training step, {tb}", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "textbook.png")
        plt.close(fig)
    for dim in SWEEPS:
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for r in rows:
            others = {k: v for k, v in r["config"].items() if k != dim}
            if others == {k: v for k, v in TEXTBOOK.items() if k != dim}:
                series.setdefault((r["framework"], r["variant"]), []).append(
                    (r["config"][dim], r["ms_median"]))
        if not any(len(v) > 1 for v in series.values()):
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=90)
        for (fw, variant), pts in sorted(series.items()):
            pts.sort()
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{fw} {variant}",
                    linestyle="-" if variant == "fast" else "--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(dim)
        ax.set_ylabel("ms per step")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(out / f"sweep_{dim}.png")
        plt.close(fig)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The ``run`` options (shared by ``rnn-backends bench``)."""
    p = parser or argparse.ArgumentParser(prog="rnn-backends bench")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    p.add_argument("--python", action="append", default=[], metavar="NAME=PATH",
                   help="run framework NAME's worker with this interpreter (its own venv)")
    p.add_argument("--out", default="benchmarks/results", help="directory for JSON, .md, PNGs")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                   help="quick: textbook config, every variant (default); sweep: T, H, B sweeps "
                   "for fast and native; full: both")
    p.add_argument("--variants", default=None, help="comma-separated, overrides the preset")
    p.add_argument("--sweeps", default=None, help="comma-separated of T,H,B ('' for none)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--threads", type=int, default=1,
                   help="threads per framework (default 1: the 2-core machine is shared; 0 "
                   "leaves each framework's default)")
    p.add_argument("--jax-unroll", type=int, default=None, help="lax.scan unroll for JAX")
    return p


def main_run(args: argparse.Namespace) -> int:
    pythons = {}
    for item in args.python:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise SystemExit(f"--python takes NAME=PATH of an existing interpreter, got {item!r}")
        pythons[name] = path
    summary = run(
        Path(args.out), pythons, [f for f in args.frameworks.split(",") if f],
        preset=args.preset,
        variants=args.variants.split(",") if args.variants else None,
        sweeps=[s for s in args.sweeps.split(",") if s] if args.sweeps is not None else None,
        steps=args.steps, warmup=args.warmup, dtype=args.dtype, device=args.device,
        threads=args.threads or None, jax_unroll=args.jax_unroll,
    )
    print(f"written: {Path(args.out) / 'results.md'}")
    if "fastest" in summary:
        print(f"fastest at the textbook configuration: {summary['fastest'][0]} "
              f"{summary['fastest'][1]:.2f} ms/step")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rnn_backends.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    build_parser(sub.add_parser("run", help="every framework, one after another"))
    asm = sub.add_parser("assemble", help="table and plots from the workers' JSON")
    asm.add_argument("out")
    w = sub.add_parser("worker", help="one framework in this interpreter")
    for flag in ("--framework", "--variants", "--configs", "--json", "--dtype", "--options"):
        w.add_argument(flag, required=flag not in ("--options",))
    w.add_argument("--steps", type=int, required=True)
    w.add_argument("--warmup", type=int, required=True)
    w.add_argument("--threads", type=int, default=0)
    w.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    if args.command == "worker":
        return run_worker(args)
    if args.command == "assemble":
        assemble(Path(args.out))
        print(f"written: {Path(args.out) / 'results.md'}")
        return 0
    return main_run(args)


if __name__ == "__main__":
    sys.exit(main())
