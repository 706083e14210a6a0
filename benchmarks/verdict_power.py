"""How small a bug the float32 verdict still catches: the README's figures, measured.

For the quick preset's first step (embedded corpus, hidden 32, batch 256 x 32), one gradient tensor
at a time is scaled by ``1 + e``, and ``e`` is bisected down to the smallest value the verdict
fails on:

* in the training step's update, judged by the single-step replay against the ensemble band
  (what a bug in a framework's training step meets);
* in the step-0 gradients, judged by the componentwise rounding bound and by the band.

NumPy only (the perturbed computation is the float32 oracle's own), a few seconds per model::

    python benchmarks/verdict_power.py            # the tanh RNN
    python benchmarks/verdict_power.py --cell gru --layers 2
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from rnn_backends import ModelConfig, TrainConfig, get_backend, load_corpus, numerics, reference
from rnn_backends.data.batching import CharBatches
from rnn_backends.ensemble import Member
from rnn_backends.params import init_params
from rnn_backends.verdict import band_check


def smallest(fails: Callable[[float], bool], lo: float = 1e-9, hi: float = 1.0) -> float | None:
    """The smallest ``e`` in [lo, hi] with ``fails(e)`` (geometric bisection), None if none."""
    if not fails(hi):
        return None
    for _ in range(40):
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if fails(mid) else (mid, hi)
    return hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="rnn", choices=["rnn", "gru", "lstm"])
    parser.add_argument("--layers", type=int, default=1)
    args = parser.parse_args()
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=32, cell=args.cell,
                        num_layers=args.layers)  # fmt: skip
    config = TrainConfig(batch_size=256, num_steps=32, dtype="float32", lr=1.0, grad_clip=1.0)
    X, Y = next(CharBatches(corpus.ids, config).train_batches(0))
    p32 = init_params(model, 0, "float32")
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    members = [Member(get_backend("numpy", dtype="float32"), seed) for seed in range(4)]

    one = numerics.one_step(p32, X, Y)
    member_grads = [m.loss_and_grads(p32, X, Y)[1] for m in members]
    truth_step, *_ = reference.model_train_step(p64, X, Y, None, 1.0, 1.0)
    member_steps = [m.train_step(p32, X, Y, lr=1.0, grad_clip=1.0).params for m in members]
    _, grads, _ = reference.model_loss_and_grads(p32, X, Y)

    def update_ratio(name: str, e: float) -> float:
        g = {**grads, name: (grads[name] * (1 + e)).astype(np.float32)}
        clipped, _ = reference.clip_grads(g, 1.0)
        new = reference.sgd(p32, clipped, 1.0)
        return max(band_check(k, 0, new[k], truth_step[k], [s[k] for s in member_steps],
                              "float32", p32[k]).ratio for k in new)  # fmt: skip

    def grad_ratios(name: str, e: float) -> tuple[float, float]:
        g = (grads[name] * (1 + e)).astype(np.float32)
        exact = one.grads[name]
        comp = numerics.worst_ratio(g, exact, one.allowed_grads[name]).ratio
        band = band_check(name, 0, g, exact, [m[name] for m in member_grads], "float32").ratio
        return comp, band

    fmt = lambda x: "-" if x is None else f"{x:.2g}"  # noqa: E731
    print(f"{args.cell}, {args.layers} layer(s); correct update: "
          f"{max(update_ratio(k, 0.0) for k in grads):.2f}x what is allowed")  # fmt: skip
    print("| tensor | update (band) | step-0 gradient (componentwise) | step-0 gradient (band) |")
    print("|---|---|---|---|")
    for name in grads:
        upd = smallest(lambda e, k=name: update_ratio(k, e) > 1)
        comp = smallest(lambda e, k=name: grad_ratios(k, e)[0] > 1)
        band = smallest(lambda e, k=name: grad_ratios(k, e)[1] > 1)
        print(f"| {name} | {fmt(upd)} | {fmt(comp)} | {fmt(band)} |")


if __name__ == "__main__":
    main()
