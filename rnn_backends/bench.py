"""Benchmark measuring: one full training step of one framework and variant, in this process.

A step is what :meth:`Backend.train_step` does (forward, loss, backward, clipping, SGD) and ends
with the loss as a Python float, so every framework has finished its work (GPU included) when the
clock stops. ``python -m rnn_backends.bench`` is the worker: one framework, in its own
environment, every requested variant and configuration, written to one JSON file.
``rnn-backends bench`` starts the workers (:mod:`rnn_backends.benchrun`), one after another, and
``benchmarks/assemble.py`` turns their JSON files into the published table and plots.

Timings are reported, never asserted. Achieved GFLOP/s counts the model's useful FLOPs
(:func:`step_flops`, the same for every variant) against a float32 matmul peak measured by NumPy
in the same worker process with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .progress import Progress


def step_flops(V: int, H: int, B: int, T: int) -> int:
    """Useful FLOPs of one step: 6 N H (H + V) for N = B T tokens.

    Forward: the recurrence 2NH^2 and the output layer 2NHV; backward: twice each (the gradient
    of the input and of the weight). The input projection is a row gather (no FLOPs); elementwise
    work is not counted. The one-hot variants do more arithmetic, but not more useful work.
    """
    N = B * T
    return 6 * N * H * (H + V)


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


def _rss_peak_mb() -> float:
    """Peak resident set size of this process in MiB (NaN where unknown)."""
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


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


def _time_steps(
    backend: Any, tensors: Any, batches: list[tuple[np.ndarray, np.ndarray]], warmup: int,
    steps: int, label: str,
) -> tuple[float, list[float]]:
    """Seconds of the first (compile) step, then of ``steps`` timed steps after ``warmup`` more;
    ``batches`` are (X, Y) id arrays of shape (B, T), taken in turn."""

    def step(i: int) -> float:
        nonlocal tensors
        X, Y = batches[i % len(batches)]
        t0 = time.perf_counter()
        res = backend.train_step(tensors, X, Y, lr=1.0, grad_clip=1.0)  # float loss: synced
        elapsed = time.perf_counter() - t0
        tensors = res.params
        if not np.isfinite(res.loss):
            raise FloatingPointError(f"{label}: loss {res.loss}")
        return elapsed

    first = step(0)
    for i in range(warmup):
        step(i + 1)
    return first, [step(i) for i in range(steps)]


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
    """Time ``steps`` training steps after the first (compile) step and ``warmup`` more, at the
    configuration ``cfg`` (vocabulary V, hidden H, batch B, time steps T)."""
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
    first, times = _time_steps(backend, backend.prepare(params), batches, warmup, steps,
                               label=f"{framework}/{variant} at {cfg}")
    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    flops = step_flops(V, H, B, T)
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
        "rss_peak_mb": _rss_peak_mb(),
        "device_peak_mb": memory.peak_mb(),
    }


def _measure(out: dict[str, Any], progress: Progress, framework: str, variant: str,
             cfg: dict[str, int], args: argparse.Namespace, options: dict[str, Any]) -> None:
    """One :func:`bench_one` into ``out`` (its row, or its error: a variant that fails is
    reported, not fatal to the run), shown as one progress line."""
    where = f"{variant:<8} V={cfg['V']} H={cfg['H']} B={cfg['B']} T={cfg['T']}"
    try:
        row = bench_one(framework, variant, cfg, dtype=args.dtype, device=args.device,
                        warmup=args.warmup, steps=args.steps, options=options)
    except Exception as exc:
        out["errors"].append(f"{variant} {cfg}: {type(exc).__name__}: {exc}")
        progress.update(1)
        progress.report(f"{where}: FAILED {type(exc).__name__}: {exc}", on_bar=True)
        return
    out["results"].append(row)
    progress.update(1, ms_per_step=row["ms_median"])
    progress.report(f"{where}: {row['ms_median']:8.2f} ms/step [{row['ms_q1']:.2f}-"
                    f"{row['ms_q3']:.2f}], first {row['first_step_s']:.2f} s", on_bar=True)


def run_worker(args: argparse.Namespace) -> int:
    """Measure every configuration x variant of one framework; write one JSON file."""
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
    configs, variants = json.loads(args.configs), args.variants.split(",")
    with Progress(len(configs) * len(variants), framework, unit="run") as progress:
        for cfg in configs:
            for variant in variants:
                _measure(out, progress, framework, variant, cfg, args, options)
    out["matmul_peak_gflops_after"] = matmul_peak()
    Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The worker's command line (the orchestrator writes it; not meant for people)."""
    parser = argparse.ArgumentParser(prog="python -m rnn_backends.bench")
    for flag in ("--framework", "--variants", "--configs", "--json", "--dtype"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--options", default=None, help="backend options as JSON")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--device", default=None)
    return run_worker(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
