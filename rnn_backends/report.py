"""Render the compare job's verdict as ``report.md``, ``report.json`` and plots.

Nothing is decided here: :func:`rnn_backends.compare.judge` hands over the rows, the failures and
the tolerances, and this module only writes them out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .checkpointing import write_atomic, write_json


def _fmt(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _header(spec: dict[str, Any], tol: dict[str, float], wall: float) -> list[str]:
    t, m = spec["train"], spec["model"]
    return [
        "# rnn-backends comparison report",
        "",
        f"Corpus `{spec['corpus']}`; cell `{m['cell']}`, hidden {m['hidden_size']},"
        f" vocab {m['vocab_size']}; batch {t['batch_size']} x {t['num_steps']} steps "
        f"({t['batching']} batching), {t.get('optimizer') or 'sgd'} at lr {t['lr']} "
        f"({t.get('schedule') or 'constant'} schedule, {t.get('warmup_steps') or 0} warmup "
        f"steps), clip {t['grad_clip']}, {t['max_epochs']} "
        f"epochs, seed {t['seed']}, {t['dtype']}. Same initial weights and batches everywhere.",
        f"Tolerances vs the oracle (relative): step-0 gradients {tol['grad']:.0e}, per-step loss "
        f"{tol['loss']:.0e}, perplexity {tol['ppl']:.0e}. Wall time of the job: {wall:.1f} s.",
    ]


def _framework_row(r: dict[str, Any], oracle: str) -> str:
    if "epochs" not in r:
        return f"| {r['backend']} | {r['status']} | | | | | | | | | | |"
    last = r["epochs"][-1]
    if r["backend"] == oracle:
        loss = grad = "oracle"
    else:
        loss = f"{_fmt(r.get('loss_diff'), '.1e')} (step {r.get('loss_diff_step', '-')})"
        grad = f"{_fmt(r.get('grad_diff'), '.1e')} ({r.get('grad_diff_param', '-')})"
    text = r["greedy_text"].replace("|", "/")
    return (
        f"| {r['title']} | {r['version']} | {r['variant']} | {r['device']} | "
        f"{_fmt(last['train_ppl'], '.4f')} | {_fmt(last['val_ppl'], '.4f')} | "
        f"{loss} | {grad} | "
        f"{r['median_step_ms']:.1f} ({r['iqr_step_ms']:.1f}) | {r['tokens_per_s']:,.0f} | "
        f"{r['first_step_s']:.2f} | `{text}` |"
    )


def _framework_table(rows: list[dict[str, Any]], oracle: str) -> list[str]:
    return [
        "",
        "| framework | version | variant | device | train ppl | val ppl | worst step-loss diff "
        "| worst step-0 grad diff | ms/step (IQR) | tokens/s | first step s | greedy text |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_framework_row(r, oracle) for r in rows),
    ]


def _interchange_table(rows: list[dict[str, Any]]) -> list[str]:
    inter_rows = [r for r in rows if r.get("interchange")]
    if not inter_rows:
        return []
    sources = sorted({s for r in inter_rows for s in r["interchange"]})
    lines = [
        "",
        "## Checkpoint interchange",
        "",
        "Validation perplexity when the row's framework loads the column's checkpoint.",
        "",
        "| loads -> | " + " | ".join(sources) + " |",
        "|---|" + "---|" * len(sources),
    ]
    for r in inter_rows:
        cells = [_fmt(r["interchange"].get(s, {}).get("val_ppl"), ".6f") for s in sources]
        lines.append(f"| {r['backend']} | " + " | ".join(cells) + " |")
    return lines


def _verdict(rows: list[dict[str, Any]], failures: list[str], oracle: str) -> list[str]:
    lines = ["", "## Verdict", ""]
    if failures:
        lines.append(f"**FAIL**: {len(failures)} departure(s) from the oracle:")
        lines += [f"- {f}" for f in failures]
    else:
        ok = [r["backend"] for r in rows if r.get("status") == "ok" and r["backend"] != oracle]
        lines.append(
            f"**PASS**: {', '.join(ok) or 'the oracle alone'} agree with the NumPy oracle within "
            "tolerance (losses, gradients, perplexities, checkpoints, greedy text)."
        )
    skipped = [
        f"{r['backend']} ({r['status']})"
        for r in rows
        if str(r.get("status", "")).startswith("not installed")
    ]
    if skipped:
        lines.append(f"Not run: {'; '.join(skipped)}.")
    return lines


def markdown(report: dict[str, Any], oracle: str) -> str:
    """``report.md`` for the verdict ``report`` (see :func:`rnn_backends.compare.judge`);
    ``oracle`` names the reference row."""
    rows = report["frameworks"]
    lines = [
        *_header(report["spec"], report["tolerance"], report["wall_s"]),
        *_framework_table(rows, oracle),
        *_interchange_table(rows),
        *_verdict(rows, report["failures"], oracle),
        "", "![perplexity](perplexity.png)", "", "![time per step](step_time.png)", "",
    ]  # fmt: skip
    return "\n".join(lines)


def _plots(out: Path, rows: list[dict[str, Any]]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    done = [r for r in rows if "epochs" in r]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = ["-", "--", "-.", ":", (0, (5, 1))]
    for i, r in enumerate(done):
        ep = [e["epoch"] for e in r["epochs"]]
        ls = styles[i % len(styles)]
        train_ppl = [e["train_ppl"] for e in r["epochs"]]
        ax.plot(ep, train_ppl, linestyle=ls, label=f"{r['backend']} train")
        ax.plot(
            ep,
            [e["val_ppl"] for e in r["epochs"]],
            linestyle=ls,
            marker="o",
            ms=3,
            label=f"{r['backend']} val",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_title("Perplexity per framework (curves overlap when they agree)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "perplexity.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [r["backend"] for r in done]
    ax.bar(
        names,
        [r["median_step_ms"] for r in done],
        yerr=[r["iqr_step_ms"] / 2 for r in done],
        color="#4a7ab5",
        capsize=4,
    )
    ax.set_ylabel("ms per training step (median)")
    ax.set_title("Time per step (forward, loss, backward, clip, SGD)")
    fig.tight_layout()
    fig.savefig(out / "step_time.png", dpi=110)
    plt.close(fig)
    return ["perplexity.png", "step_time.png"]


def write_report(out: Path, report: dict[str, Any], oracle: str) -> dict[str, Any]:
    """Write the plots, ``report.json`` and ``report.md`` under ``out`` for the verdict
    ``report``; returns it with the names of the plots drawn added as ``"plots"``."""
    report = {**report, "plots": _plots(out, report["frameworks"])}
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", markdown(report, oracle).encode("utf-8"))
    return report
