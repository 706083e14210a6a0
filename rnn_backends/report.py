"""Render the compare job's verdict as ``report.md``, ``report.json`` and plots.

Nothing is decided here: :func:`rnn_backends.compare.judge` hands over the rows, the failures and
the tolerances, and this module only writes them out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .checkpointing import atomic_stream, write_atomic, write_json
from .summary import margin_text, markdown_table


def _save_png(fig: Any, path: Path) -> None:
    """``fig`` as a PNG at ``path``, through the package's one atomic writer."""
    with atomic_stream(path) as fh:
        fig.savefig(fh, format="png", dpi=110)

def _fmt(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _header(spec: dict[str, Any], checked: list[str], wall: float) -> list[str]:
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
        f"Wall time of the job: {wall:.1f} s.",
        "",
        "Checked against the float64 oracle, from the same numbers each framework started from:",
        "",
        *(f"- {line}" for line in checked),
    ]


def _worst(r: dict[str, Any]) -> str:
    w = r.get("worst")
    if not w:
        return "-"
    at = f", step {w['step']}" if w.get("step") is not None else ""
    return f"{_fmt(w['ratio'], '.2g')}x ({w['what']}{at})"


def _framework_row(r: dict[str, Any], oracle: str, dtype: str) -> str:
    if "epochs" not in r:
        return f"| {r['backend']} | {r['status']} | | | | | | | | | | |"
    last = r["epochs"][-1]
    if r["backend"] == oracle and dtype == "float64":
        loss = grad = worst = "oracle"
    else:
        loss = f"{_fmt(r.get('loss_diff'), '.1e')} (step {r.get('loss_diff_step', '-')})"
        grad = f"{_fmt(r.get('grad_diff'), '.1e')} ({r.get('grad_diff_param', '-')})"
        worst = _worst(r)
    return (
        f"| {r['title']} | {r['version']} | {r['variant']} | {r['device']} | "
        f"{_fmt(last['train_ppl'], '.4f')} | {_fmt(last['val_ppl'], '.4f')} | "
        f"{loss} | {grad} | {worst} | "
        f"{r['median_step_ms']:.1f} ({r['iqr_step_ms']:.1f}) | {r['tokens_per_s']:,.0f} | "
        f"{r['first_step_s']:.2f} |"
    )


def _framework_table(rows: list[dict[str, Any]], oracle: str, dtype: str) -> list[str]:
    return [
        "",
        "| framework | version | variant | device | train ppl | val ppl | worst step-loss diff "
        "| worst step-0 grad diff | worst deviation / allowed | ms/step (IQR) | tokens/s "
        "| first step s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_framework_row(r, oracle, dtype) for r in rows),
        "",
        "Differences are relative, against the float64 oracle. *Worst deviation / allowed* is the "
        "largest of all the checks listed above (1 or less passes), with the quantity and step.",
    ]


def _text_table(rows: list[dict[str, Any]], prefix: str) -> list[str]:
    done = [r for r in rows if "greedy_text" in r]
    if not done:
        return []
    clean = lambda t: t.replace("|", "/").replace("`", "'")  # noqa: E731
    return [
        "",
        f"## Generated text (prefix `{clean(prefix)}`)",
        "",
        "| framework | greedy | sampled (temperature 0.8, seed 0) |",
        "|---|---|---|",
        *(f"| {r['backend']} | `{clean(r['greedy_text'])}` | `{clean(r.get('sampled_text', ''))}` |"
          for r in done),
    ]  # fmt: skip


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


def _baselines(report: dict[str, Any]) -> list[str]:
    """The n-gram baselines of the job's split, and each framework's margin to the best."""
    b = report.get("baselines")
    if not b:
        return []
    lines = ["", "## Baselines", "",
             "Fitted on the same training text and scored on the same validation and test "
             "tokens, with the same context, as the RNNs. The n-gram's order and discounts are "
             "chosen on validation; the test split is used for nothing but this report.", "",
             *markdown_table(b)]  # fmt: skip
    best = b.get("best")
    done = [r for r in report["frameworks"] if "epochs" in r]
    if best is None or not done:
        return lines
    lines += ["", "| framework | val ppl | test ppl | margin to the best n-gram (test) |",
              "|---|---|---|---|"]  # fmt: skip
    test_best = (b.get("test") or {}).get("best")
    for r in done:
        test = (r.get("test") or {}).get("test_ppl")
        margin = margin_text(test, test_best, "test") if test and test_best else "-"
        lines.append(f"| {r['backend']} | {_fmt(r['epochs'][-1]['val_ppl'], '.4f')} | "
                     f"{_fmt(test, '.4f')} | {margin} |")  # fmt: skip
    return lines + _winner_text(done)


def _winner_text(done: list[dict[str, Any]]) -> list[str]:
    """The generated text of the run with the lowest test perplexity (validation without a
    test split)."""
    def score(r: dict[str, Any]) -> float:
        test = (r.get("test") or {}).get("test_ppl")
        value = test if test is not None else r["epochs"][-1]["val_ppl"]
        return value if isinstance(value, float) and math.isfinite(value) else math.inf

    best = min(done, key=score)
    if "greedy_text" not in best:
        return []
    clean = lambda t: t.replace("`", "'")  # noqa: E731
    return ["", f"Text from the model with the lowest test perplexity ({best['backend']}): "
            f"greedy `{clean(best['greedy_text'])}`; sampled (temperature 0.8) "
            f"`{clean(best.get('sampled_text', ''))}`."]  # fmt: skip


def _verdict(rows: list[dict[str, Any]], failures: list[str], oracle: str) -> list[str]:
    lines = ["", "## Verdict", ""]
    if failures:
        lines.append(f"**FAIL**: {len(failures)} departure(s) from the oracle:")
        lines += [f"- {f}" for f in failures]
    else:
        ok = [r["backend"] for r in rows if r.get("status") == "ok" and r["backend"] != oracle]
        lines.append(
            f"**PASS**: {', '.join(ok) or 'the oracle alone'} agree with the float64 oracle "
            "within what rounding allows (every check listed above)."
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
    rows, spec = report["frameworks"], report["spec"]
    plots = report.get("plots", [])
    lines = [
        *_header(spec, report.get("checked", []), report["wall_s"]),
        *_framework_table(rows, oracle, spec["train"]["dtype"]),
        *_verdict(rows, report["failures"], oracle),
        *_baselines(report),
        *_text_table(rows, spec.get("prefix", "")),
        *_interchange_table(rows),
        "",
        *(f"![{name[:-4]}]({name})\n" for name in plots),
    ]
    return "\n".join(lines)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


_STYLES = ["-", "--", "-.", ":", (0, (5, 1))]


def _plot_perplexity(plt: Any, out: Path, done: list[dict[str, Any]],
                     baselines: dict[str, Any] | None = None) -> str:  # fmt: skip
    """Train and validation perplexity per epoch of every framework, and one horizontal line
    per baseline (its validation perplexity)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if baselines:
        lines = [("uniform", baselines["uniform"]), ("unigram", baselines["unigram"])]
        if baselines.get("best"):
            lines.append((f"best n-gram ({baselines['best']['order']}-gram)",
                          baselines["best"]["val_ppl"]))  # fmt: skip
        for i, (name, ppl) in enumerate(lines):
            ax.axhline(ppl, color=("0.6", "0.4", "k")[i], lw=1, ls=_STYLES[(i + 1) % len(_STYLES)],
                       label=f"{name}: val {ppl:.3f}")  # fmt: skip
        ax.set_yscale("log")  # from V (uniform) down to the n-gram's few units
        from matplotlib.ticker import FormatStrFormatter

        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    for i, r in enumerate(done):
        ep = [e["epoch"] for e in r["epochs"]]
        ls = _STYLES[i % len(_STYLES)]
        ax.plot(ep, [e["train_ppl"] for e in r["epochs"]], linestyle=ls,
                label=f"{r['backend']} train")  # fmt: skip
        ax.plot(ep, [e["val_ppl"] for e in r["epochs"]], linestyle=ls, marker="o", ms=3,
                label=f"{r['backend']} val")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_title("Perplexity per framework (curves overlap when they agree)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save_png(fig, out / "perplexity.png")
    plt.close(fig)
    return "perplexity.png"


def _plot_step_time(plt: Any, out: Path, done: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.bar([r["backend"] for r in done], [r["median_step_ms"] for r in done],
           yerr=[r["iqr_step_ms"] / 2 for r in done], color="#4a7ab5", capsize=4)  # fmt: skip
    ax.set_ylabel("ms per training step (median)")
    ax.set_title("Time per step (forward, loss, backward, clip, SGD)")
    fig.tight_layout()
    _save_png(fig, out / "step_time.png")
    plt.close(fig)
    return "step_time.png"


def _plot_deviation(plt: Any, out: Path, rows: list[dict[str, Any]],
                    trajectory: dict[str, Any]) -> str | None:  # fmt: skip
    """Each framework's per-step relative loss deviation from the float64 oracle (log scale),
    the float32 noise band (the ensemble's) and what the verdict allows."""
    curves = [r for r in rows if r.get("loss_diff_curve")]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    tiny = 1e-18  # a deviation of exactly 0 cannot sit on a log axis
    band, allowed = trajectory.get("band"), trajectory.get("allowed")
    if band:
        steps = range(len(band))
        ax.fill_between(steps, tiny, [max(b, tiny) for b in band], color="#bbbbbb", alpha=0.6,
                        label="float32 noise band (ensemble)", step="mid")  # fmt: skip
    if isinstance(allowed, list):
        ax.plot(range(len(allowed)), allowed, color="k", lw=1.2, label="allowed")
    elif allowed is not None:
        ax.axhline(allowed, color="k", lw=1.2, label=f"allowed ({allowed:.0e})")
    cut = trajectory.get("cut")
    if band and cut is not None and cut < len(band):
        ax.axvline(cut, color="k", ls=":", lw=1, label=f"band reaches the cut (step {cut})")
    for i, r in enumerate(curves):
        ax.plot([max(d, tiny) for d in r["loss_diff_curve"]], lw=0.9,
                linestyle=_STYLES[i % len(_STYLES)], label=r["backend"])  # fmt: skip
    ax.set_yscale("log")
    shown = [d for r in curves for d in r["loss_diff_curve"] if d > 0]
    shown += [b for b in band or [] if b > 0]
    if shown:
        ax.set_ylim(bottom=min(shown) / 3)
    ax.set_xlabel("training step")
    ax.set_ylabel("|loss - float64 loss| / float64 loss")
    ax.set_title("Per-step deviation from the float64 oracle")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save_png(fig, out / "deviation.png")
    plt.close(fig)
    return "deviation.png"


def _plots(out: Path, rows: list[dict[str, Any]], trajectory: dict[str, Any] | None = None,
           baselines: dict[str, Any] | None = None) -> list[str]:  # fmt: skip
    """Draw the plots that have data; returns their file names (none without matplotlib)."""
    plt = _pyplot()
    if plt is None:
        return []
    done = [r for r in rows if "epochs" in r]
    names: list[str | None] = [_plot_perplexity(plt, out, done, baselines),
                               _plot_step_time(plt, out, done)]
    if trajectory is not None:
        names.append(_plot_deviation(plt, out, rows, trajectory))
    return [n for n in names if n]


def write_report(out: Path, report: dict[str, Any], oracle: str) -> dict[str, Any]:
    """Write the plots, ``report.json`` and ``report.md`` under ``out`` for the verdict
    ``report``; returns it with the names of the plots drawn added as ``"plots"``."""
    plots = _plots(out, report["frameworks"], report.get("trajectory"), report.get("baselines"))
    report = {**report, "plots": plots}
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", markdown(report, oracle).encode("utf-8"))
    return report
