"""Where the fast step's time goes: each phase of ``fastpath.loss_and_grads`` and the update timed
alone, compiled the way the backend compiles its step, beside the whole ``train_step``.

Run it in a framework's environment (float32, the textbook configuration by default)::

    python benchmarks/profile_fast.py --framework tensorflow --threads 2

Phases (N = B T tokens):

* ``gather``: the token ids in time-major order and the rows ``(W_xh + b_h)[X]`` (N, H);
* ``forward loop``: ``h_t = tanh(xw_t + h_{t-1} W_hh)`` over T steps;
* ``output head``: logits, softmax cross-entropy and its gradients on all N tokens;
* ``backward loop``: ``1 - h^2`` and the T-step recursion for the pre-activation gradients;
* ``weight grads``: ``dW_xh`` (a scatter of N rows into V), ``dW_hh``, ``db_h``;
* ``update``: the global norm, the clip and SGD's update.

The phases' sum differs from the whole step by what the step saves by running as one program
(or pays for running as one: fewer dispatches, no intermediate results handed back). Timings are
the median over ``--steps`` runs after warm-up, in milliseconds; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnn_backends import fastpath, optim  # noqa: E402
from rnn_backends.backends.registry import get_backend  # noqa: E402
from rnn_backends.bench import _batches, _initial_params  # noqa: E402
from rnn_backends.benchrun import TEXTBOOK  # noqa: E402
from rnn_backends.workers import thread_env  # noqa: E402


def _compiler(framework: str) -> tuple[Callable[[Callable], Callable], Callable[[Any], None]]:
    """(how the backend compiles a step function, how to wait for a result)."""
    if framework == "jax":
        import jax

        return jax.jit, lambda out: jax.block_until_ready(out)
    if framework == "tensorflow":
        import tensorflow as tf

        return (lambda f: tf.function(f, autograph=False)), lambda out: None
    if framework == "mxnet":
        import mxnet as mx

        return (lambda f: f), lambda out: mx.nd.waitall()
    return (lambda f: f), lambda out: None


def _time(fn: Callable[[], Any], wait: Callable[[Any], None], steps: int) -> float:
    for _ in range(3):
        wait(fn())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        wait(fn())
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def profile(framework: str, cfg: dict[str, int], steps: int) -> list[tuple[str, float]]:
    """(phase, median ms) for each phase, their sum, and the whole ``train_step``."""
    backend = get_backend(framework, variant="fast", dtype="float32", strict=True)
    compile_, wait = _compiler(framework)
    ops = backend._make_fast_ops()
    params = _initial_params(cfg, "float32")
    X_np, Y_np = _batches(cfg)[0]
    V, H, B, T = cfg["V"], cfg["H"], cfg["B"], cfg["T"]
    N = B * T
    with backend._device_scope(), backend._inference():
        p = backend.prepare(params)
        X, Y = backend._ids(X_np), backend._ids(Y_np)
        h0 = backend._zeros_state(p, B)

        def gather(X, W_xh, b_h):
            Xf = ops.reshape(ops.swap_bt(X), (N,))
            return Xf, ops.reshape(ops.take_rows(W_xh + b_h, Xf), (T, B, H))

        def head(hs, W_hq, b_q, Y):
            return ops.output_head(ops.reshape(hs, (N, H)), W_hq, b_q,
                                   ops.reshape(ops.swap_bt(Y), (N,)))  # fmt: skip

        def backward(dH, hs, W_hh):
            return ops.backward_loop(ops.reshape(dH, (T, B, H)), ops.tanh_grad(hs), W_hh)

        def weight_grads(Xf, dZ, hs):
            dzf = ops.reshape(dZ, (N, H))
            return (ops.scatter_rows(Xf, dzf, V),
                    ops.mm_tn(h0, dZ[0]) + ops.mm_tn(ops.reshape(hs[:-1], (N - B, H)), dzf[B:]),
                    ops.sum_rows(dzf))  # fmt: skip

        sgd = optim.as_optimizer(None)
        rates = optim.Rates(*map(backend._scalar, optim.step_rates(sgd, 0, 1.0)))

        def update(params, grads):
            return optim.update(ops, sgd, params, grads, {}, rates, backend._scalar(1.0))

        phases: list[tuple[str, Callable, tuple]] = []
        Xf, xw = compile_(gather)(X, p["W_xh"], p["b_h"])
        phases.append(("gather", compile_(gather), (X, p["W_xh"], p["b_h"])))
        hs = compile_(ops.forward_loop)(xw, h0, p["W_hh"])
        phases.append(("forward loop", compile_(ops.forward_loop), (xw, h0, p["W_hh"])))
        _, _, _, dH = compile_(head)(hs, p["W_hq"], p["b_q"], Y)
        phases.append(("output head", compile_(head), (hs, p["W_hq"], p["b_q"], Y)))
        dZ = compile_(backward)(dH, hs, p["W_hh"])
        phases.append(("backward loop", compile_(backward), (dH, hs, p["W_hh"])))
        phases.append(("weight grads", compile_(weight_grads), (Xf, dZ, hs)))
        _, grads, _ = fastpath.loss_and_grads(ops, p, X, Y, h0)
        phases.append(("update", compile_(update), (p, grads)))
        rows = [(name, _time(lambda f=f, a=a: f(*a), wait, steps)) for name, f, a in phases]
    rows.append(("sum of the phases", sum(ms for _, ms in rows)))
    held = {"p": backend.prepare(params)}

    def step() -> None:
        held["p"] = backend.train_step(held["p"], X_np, Y_np, lr=1.0, grad_clip=1.0).params

    rows.append(("whole train_step", _time(step, lambda out: None, steps)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    for dim in "VHBT":
        parser.add_argument(f"--{dim}", type=int, default=TEXTBOOK[dim])
    args = parser.parse_args()
    # Before any framework is imported: they read their thread counts once.
    os.environ.update(thread_env(args.threads))
    if args.framework == "torch":
        import torch

        torch.set_num_threads(args.threads)
    cfg = {dim: getattr(args, dim) for dim in "VHBT"}
    rows = profile(args.framework, cfg, args.steps)
    print(f"{args.framework} fast step, float32, V={cfg['V']} H={cfg['H']} B={cfg['B']} "
          f"T={cfg['T']}, {args.threads} thread(s): median ms")  # fmt: skip
    for name, ms in rows:
        print(f"  {name:<18} {ms:8.2f}")


if __name__ == "__main__":
    main()
