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
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .checkpointing import write_json
from .progress import Progress

LR, GRAD_CLIP = 1.0, 1.0
"""Every timed step is SGD at learning rate 1 with clipping at 1, the textbook's values."""


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
    """Peak device memory of a GPU run, per framework; ``None`` on the CPU.

    PyTorch and TensorFlow reset their peak before each measurement. JAX keeps one peak per
    process, so on a GPU the orchestrator runs each variant in a worker of its own
    (:func:`rnn_backends.benchrun.run`) and the peak is that variant's.
    """

    def __init__(self, framework: str, device: str | None) -> None:
        self.framework = framework
        self.gpu = device in ("gpu", "cuda")

    def reset(self) -> None:
        if self.gpu and self.framework == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.gpu and self.framework == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_mb(self) -> float | None:
        if not self.gpu:
            return None
        name = self.framework
        if name == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        if name == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        if name == "jax":
            import jax

            stats = jax.devices("gpu")[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use", float("nan")) / 2**20
        if name == "mxnet":
            import mxnet as mx

            free, total = mx.context.gpu_memory_info(0)
            return (total - free) / 2**20  # MXNet reports use, not a peak
        return None


Step = Callable[[np.ndarray, np.ndarray], float]


def _package_step(
    framework: str, variant: str, params: dict[str, np.ndarray], *, dtype: str,
    device: str | None, options: dict[str, Any],
) -> tuple[Step, Any]:
    """One of the package's variants as a step ``(X, Y) -> loss``: ``train_step`` with the
    parameters kept as tensors between calls; also returns the backend."""
    from . import get_backend

    backend = get_backend(framework, dtype=dtype, device=device, variant=variant, **options)
    held = {"tensors": backend.prepare(params)}

    def step(X: np.ndarray, Y: np.ndarray) -> float:
        res = backend.train_step(held["tensors"], X, Y, lr=LR, grad_clip=GRAD_CLIP)
        held["tensors"] = res.params
        return res.loss  # a Python float: the framework has finished

    return step, backend


def _time_steps(
    step: Step, batches: list[tuple[np.ndarray, np.ndarray]], warmup: int, steps: int, label: str
) -> tuple[float, list[float], list[float]]:
    """Seconds of the first (compile) step, then of ``steps`` timed steps after ``warmup`` more;
    step k trains on ``batches[k % len(batches)]`` ((X, Y) id arrays of shape (B, T)). Also
    returns every step's loss."""
    losses: list[float] = []

    def timed(k: int) -> float:
        X, Y = batches[k % len(batches)]
        t0 = time.perf_counter()
        loss = step(X, Y)
        elapsed = time.perf_counter() - t0
        if not np.isfinite(loss):
            raise FloatingPointError(f"{label}: loss {loss} at step {k}")
        losses.append(loss)
        return elapsed

    first = timed(0)
    for k in range(warmup):
        timed(1 + k)
    return first, [timed(1 + warmup + k) for k in range(steps)], losses


INIT_SIGMA = 0.1
"""The benchmark's initial weights: N(0, 0.1^2), not the book's 0.01. Timings do not depend on
the values, but the oracle check does: from the book's init on random ids the loss moves by less
than 1e-6 in the ~15 steps a measurement takes, so a model with a frozen recurrent weight would
pass; from 0.1 on the Markov text below it moves by 3e-3 (and a learning rate 1% off by 5e-4)."""


def _batches(cfg: dict[str, int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Four (X, Y) batches of ids (B, T): windows of a seeded Markov chain over the V tokens
    (sparse transition rows, so there is something to learn), Y one token ahead of X."""
    V, B, T = cfg["V"], cfg["B"], cfg["T"]
    rng = np.random.default_rng(1)
    cdf = np.cumsum(rng.dirichlet(np.full(V, 0.1), size=V), axis=1)
    out = []
    for _ in range(4):
        tokens = np.empty((B, T + 1), dtype=np.int64)
        tokens[:, 0] = rng.integers(0, V, size=B)
        for t in range(T):
            u = rng.random(B)[:, None]
            tokens[:, t + 1] = np.minimum((cdf[tokens[:, t]] < u).sum(axis=1), V - 1)
        out.append((tokens[:, :-1], tokens[:, 1:]))
    return out


def _initial_params(cfg: dict[str, int], dtype: str) -> dict[str, np.ndarray]:
    from . import ModelConfig, init_params

    model = ModelConfig(vocab_size=cfg["V"], hidden_size=cfg["H"], init_sigma=INIT_SIGMA)
    return init_params(model, seed=0, dtype=dtype)


_ORACLE: dict[tuple[Any, ...], list[float]] = {}


def oracle_losses(cfg: dict[str, int], dtype: str, n: int) -> list[float]:
    """The NumPy oracle's loss at each of the first ``n`` steps of a benchmark run: the same
    initial weights (in ``dtype``, then float64), the same batches in the same order, float64
    arithmetic. Computed once per configuration in a worker."""
    from . import reference

    key = (tuple(sorted(cfg.items())), dtype)
    have = _ORACLE.setdefault(key, [])
    if len(have) < n:
        params = {k: v.astype(np.float64) for k, v in _initial_params(cfg, dtype).items()}
        batches, have[:] = _batches(cfg), []
        for k in range(n):
            X, Y = batches[k % len(batches)]
            params, loss, _, _ = reference.train_step(params, X, Y, None, LR, GRAD_CLIP)
            have.append(loss)
    return have[:n]


def loss_bound(dtype: str) -> float:
    """How far (relative) a run's loss after the timed steps may be from the oracle's.

    float64: the compare job's 1e-9 over a run. float32: 1e-4, far above float32 rounding (unit
    roundoff 6e-8; the float32 oracle run misses the float64 one by ~1e-9 after 14 steps at the
    textbook configuration) and below what a real bug moves the loss in those steps (a learning
    rate 1% off: 5e-4; a frozen W_hh: 3e-3; a frozen b_q: 3e-3).
    TODO(numerics): replace with the error model of ``rnn_backends.numerics`` once it lands.
    """
    return 1e-9 if dtype == "float64" else 1e-4


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
    configuration ``cfg`` (vocabulary V, hidden H, batch B, time steps T), and check the loss of
    the last step against the oracle's. ``variant`` is a package variant or a stock path
    (:mod:`rnn_backends.stock`)."""
    from . import stock

    params = _initial_params(cfg, dtype)
    memory = _DeviceMemory(framework, device)
    memory.reset()
    if stock.is_stock(variant):
        step = stock.make_step(framework, variant, params, dtype=dtype, device=device, lr=LR,
                               grad_clip=GRAD_CLIP)
        backend = None
    else:
        step, backend = _package_step(framework, variant, params, dtype=dtype, device=device,
                                      options=options)
    label = f"{framework}/{variant} at {cfg}"
    first, times, losses = _time_steps(step, _batches(cfg), warmup, steps, label)
    want = oracle_losses(cfg, dtype, len(losses))[-1]
    diff = abs(losses[-1] - want) / abs(want)
    ms = sorted(t * 1e3 for t in times)
    median = statistics.median(ms)
    flops = step_flops(cfg["V"], cfg["H"], cfg["B"], cfg["T"])
    return {
        "framework": framework,
        "variant": variant,
        "description": stock.PATHS.get(framework, {}).get(variant, ""),
        "config": cfg,
        "device": backend.device if backend else (device or "cpu"),
        "version": _version(framework, backend),
        "first_step_s": first,
        "ms_median": median,
        "ms_min": ms[0],
        "ms_q1": float(np.percentile(ms, 25)),
        "ms_q3": float(np.percentile(ms, 75)),
        "ms_max": ms[-1],
        "steps": steps,
        "tokens_per_s": cfg["B"] * cfg["T"] / (median / 1e3),
        "gflops": flops / (median / 1e3) / 1e9,
        "step_mflop": flops / 1e6,
        "rss_peak_mb": _rss_peak_mb(),
        "device_peak_mb": memory.peak_mb(),
        "loss_last": losses[-1],
        "oracle_loss_last": want,
        "loss_rel_diff": diff,
        "loss_bound": loss_bound(dtype),
        "correct": bool(diff <= loss_bound(dtype)),
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
    check = "oracle ok" if row["correct"] else "DIFFERS FROM THE ORACLE"
    progress.report(f"{where}: {row['ms_median']:8.2f} ms/step [{row['ms_q1']:.2f}-"
                    f"{row['ms_q3']:.2f}], first {row['first_step_s']:.2f} s, loss {check} "
                    f"({row['loss_rel_diff']:.1e})", on_bar=True)


def _version(framework: str, backend: Any) -> str:
    if backend is not None:
        return backend.version()
    from .backends.registry import get_backend

    return get_backend(framework, device="cpu").version()


def whole_run(framework: str, dtype: str, device: str | None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The book's whole training run on the ``fast`` step (the oracle's own for ``numpy``),
    timed end to end: the compare job's ``textbook`` preset (H=32, B=1024, T=32, 100 epochs of
    10 steps, SGD at 1, clipping at 1) on the embedded corpus, a validation pass after every
    epoch included. ``overrides``: preset fields to change (a shorter run, for tests)."""
    from .backends.registry import get_backend
    from .compare import default_spec
    from .data.corpus import load_corpus
    from .train import train

    spec = default_spec("default", "textbook", dict(overrides or {}), dtype=dtype)
    variant = None if framework == "numpy" else "fast"
    backend = get_backend(framework, variant=variant, dtype=dtype, device=device)
    t0 = time.perf_counter()
    result = train(backend, load_corpus(spec.corpus), spec.model_config(), spec.train_config(),
                   progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    steps = result.history["step_seconds"]
    return {"seconds": seconds, "steps": len(steps), "epochs": len(result.history["epochs"]),
            "first_step_s": steps[0], "val_ppl": result.history["epochs"][-1]["val_ppl"],
            "corpus": "the embedded default corpus"}  # fmt: skip


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
    if args.whole_run:
        try:
            out["whole_run"] = whole_run(framework, args.dtype, args.device)
        except Exception as exc:
            out["errors"].append(f"whole run: {type(exc).__name__}: {exc}")
    out["matmul_peak_gflops_after"] = matmul_peak()
    write_json(args.json, out)
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
    parser.add_argument("--whole-run", action="store_true",
                        help="also time the book's whole 100-epoch run (whole_run)")
    return run_worker(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
