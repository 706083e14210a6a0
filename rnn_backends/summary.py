"""The baselines beside a model's perplexities, as plain lines (the train command's end-of-run
summary) and as a Markdown table (the compare report). Only rendering: the numbers come from
:meth:`rnn_backends.baselines.Baselines.to_dict` and the run's history.
"""

from __future__ import annotations

import math
from typing import Any


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.3f}"


def _kn(table: dict[Any, float], order: int) -> float | None:
    # JSON turns the integer orders into strings; a fresh to_dict() keeps them ints.
    return table.get(order, table.get(str(order)))


def baseline_rows(b: dict[str, Any]) -> list[tuple[str, float | None, float | None]]:
    """(name, validation perplexity, test perplexity) of every baseline in ``b`` (a
    ``Baselines.to_dict()``): uniform, unigram, each Kneser-Ney order, the best order last."""
    test = b.get("test") or {}
    rows: list[tuple[str, float | None, float | None]] = [
        ("uniform", b["uniform"], test.get("uniform")),
        ("unigram", b["unigram"], test.get("unigram")),
    ]
    for order in sorted(int(n) for n in b["kn"]):
        rows.append((f"Kneser-Ney {order}-gram", _kn(b["kn"], order),
                     _kn(test.get("kn") or {}, order)))  # fmt: skip
    best = b.get("best")
    if best is not None:
        rows.append((best_name(b), best["val_ppl"], test.get("best")))
    return rows


def best_name(b: dict[str, Any]) -> str:
    """``best n-gram (Kneser-Ney 5-gram, D = 0.001/0.75/...)``: the order and discounts chosen
    on validation."""
    best = b["best"]
    ds = "/".join(f"{d:.3g}" for d in best["discounts"])
    return f"best n-gram (Kneser-Ney {best['order']}-gram, D = {ds})"


def train_summary(history: dict[str, Any]) -> list[str]:
    """The end-of-run lines after the final perplexities: the test perplexity, then each
    baseline's validation and test perplexity and the margin to the best n-gram."""
    lines = []
    test = history.get("test")
    if test is not None:
        lines.append(f"test perplexity {_fmt(test['test_ppl'])} ({test['test_tokens']} tokens, "
                     "scored once, after the last epoch)")  # fmt: skip
    b = history.get("baselines")
    if b is None:
        return lines
    lines.append("baselines (fitted on the training text; validation / test perplexity):")
    rows = baseline_rows(b)
    width = max(len(name) for name, _, _ in rows)
    for name, val, tst in rows:
        lines.append(f"  {name:<{width}} {_fmt(val):>8} / {_fmt(tst)}")
    best = b.get("best")
    last = history["epochs"][-1] if history.get("epochs") else None
    if best is not None and last is not None:
        lines.append("  " + margin_text(last["val_ppl"], best["val_ppl"], "validation"))
        if test is not None and (b.get("test") or {}).get("best") is not None:
            lines.append("  " + margin_text(test["test_ppl"], b["test"]["best"], "test"))
    return lines


def margin_text(rnn: float, ngram: float, split: str) -> str:
    """``RNN 3.512 vs best n-gram 3.840 on test: 8.5% lower (beats it)``."""
    if not (math.isfinite(rnn) and math.isfinite(ngram)) or ngram <= 0:
        return f"RNN {_fmt(rnn)} vs best n-gram {_fmt(ngram)} on {split}"
    change = (rnn - ngram) / ngram
    verdict = "beats it" if rnn < ngram else "loses to it"
    word = "lower" if change < 0 else "higher"
    return (f"RNN {rnn:.3f} vs best n-gram {ngram:.3f} on {split}: {abs(change):.1%} {word} "
            f"({verdict})")  # fmt: skip


def markdown_table(b: dict[str, Any]) -> list[str]:
    """The baselines as Markdown table lines (validation and test columns)."""
    lines = ["| baseline | validation ppl | test ppl |", "|---|---|---|"]
    lines += [f"| {name} | {_fmt(val)} | {_fmt(tst)} |" for name, val, tst in baseline_rows(b)]
    return lines


__all__ = ["baseline_rows", "best_name", "margin_text", "markdown_table", "train_summary"]
