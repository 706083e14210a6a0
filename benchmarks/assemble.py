"""The published benchmark results: ``results.md`` and PNG plots from the workers' JSON files.

    rnn-backends bench --python torch=/venvs/torch/bin/python ... --out benchmarks/results
    python benchmarks/assemble.py benchmarks/results

``rnn-backends bench`` measures (one ``<framework>.json`` per framework); this script only reads
those files and lays them out, so it can be run again at any time without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import the package of this checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnn_backends.backends.registry import FRAMEWORKS  # noqa: E402
from rnn_backends.benchrun import SWEEPS, TEXTBOOK, VARIANTS  # noqa: E402

Row = dict[str, Any]


def load_runs(out: Path) -> list[dict[str, Any]]:
    """The workers' JSON files in ``out``, in the order of FRAMEWORKS (missing ones skipped)."""
    paths = [out / f"{fw}.json" for fw in FRAMEWORKS]
    return [json.loads(path.read_text()) for path in paths if path.is_file()]


def _key(cfg: dict[str, int]) -> str:
    return f"V={cfg['V']} H={cfg['H']} B={cfg['B']} T={cfg['T']}"


def _header(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["# Training-step benchmark", ""]
    if runs:
        r0 = runs[0]
        lines += [
            f"Machine: {r0['machine']}; threads per framework: {r0['threads'] or 'default'}; "
            f"dtype {r0['dtype']}; one step = forward, loss, backward, clipping, SGD; "
            "median of the timed steps after warm-up, [quartiles].",
            "",
        ]
    return lines


def _textbook_row(r: Row, mine: dict[str, Row], peak: float | None) -> str:
    base, nat = mine.get("textbook"), mine.get("native")
    vs_tb = f"{base['ms_median'] / r['ms_median']:.1f}x" if base else "-"
    vs_nat = f"{nat['ms_median'] / r['ms_median']:.1f}x" if nat else "-"
    pct = f"{100 * r['gflops'] / peak:.1f}" if peak else "-"
    return (
        f"| {r['framework']} | {r['variant']} | {r['ms_median']:.2f} | "
        f"[{r['ms_q1']:.2f}-{r['ms_q3']:.2f}] | {vs_tb} | {vs_nat} | {r['tokens_per_s']:,.0f} | "
        f"{r['first_step_s']:.2f} | {r['gflops']:.1f} | {pct} | {r['rss_peak_mb']:.0f} |"
    )


def _textbook_table(rows: list[Row], peaks: dict[str, float]) -> tuple[list[str], dict[str, float]]:
    """The table at the textbook configuration, and its ms/step per ``framework/variant``."""
    tb = _key(TEXTBOOK)
    lines = [f"## Textbook configuration ({tb})", "",
             "| framework | variant | ms/step (median) | [q1-q3] | vs own textbook "
             "| vs own native "
             "| tokens/s | first step (s) | GFLOP/s | % of matmul peak | peak RSS (MiB) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    ms: dict[str, float] = {}
    for fw in FRAMEWORKS:
        mine = {r["variant"]: r for r in rows if r["framework"] == fw and _key(r["config"]) == tb}
        for variant in VARIANTS:
            if variant in mine:
                lines.append(_textbook_row(mine[variant], mine, peaks.get(fw)))
                ms[f"{fw}/{variant}"] = mine[variant]["ms_median"]
    return lines, ms


def _sweep_table(rows: list[Row]) -> list[str]:
    sweeps = [r for r in rows if _key(r["config"]) != _key(TEXTBOOK)]
    if not sweeps:
        return []
    lines = ["", "## Sweeps (ms/step, median)", "",
             "| framework | variant | config | ms/step | tokens/s | GFLOP/s |",
             "|---|---|---|---:|---:|---:|"]  # fmt: skip
    for r in sorted(sweeps, key=lambda r: (r["framework"], r["variant"], *r["config"].values())):
        lines.append(f"| {r['framework']} | {r['variant']} | {_key(r['config'])} | "
                     f"{r['ms_median']:.2f} | {r['tokens_per_s']:,.0f} | {r['gflops']:.1f} |")
    return lines


def assemble(out: Path, plots: bool = True) -> dict[str, Any]:
    """Write ``out/results.md`` (and PNG plots when matplotlib is present) from the workers'
    JSON files; returns ``{"textbook": {fw/variant: ms}, "fastest": (fw/variant, ms)}``."""
    runs = load_runs(out)
    rows = [r for run in runs for r in run["results"]]
    peaks = {run["framework"]: run["matmul_peak_gflops"] for run in runs}
    table, ms = _textbook_table(rows, peaks)
    lines = _header(runs) + table
    summary: dict[str, Any] = {"textbook": ms}
    if ms:
        best = min(ms, key=ms.get)
        summary["fastest"] = (best, ms[best])
        lines += ["", f"Fastest: {best} at {ms[best]:.2f} ms/step."]
    lines += ["", "Matmul peak (NumPy float32 1024^2, same process and threads): "
              + ", ".join(f"{fw} worker {p:.0f} GFLOP/s" for fw, p in peaks.items())]
    if not any(r.get("device_peak_mb") is not None for r in rows):
        lines += ["", "GPU: not run (no GPU in this run); device memory is reported on a GPU."]
    lines += _sweep_table(rows)
    errors = [f"{run['framework']}: {e}" for run in runs for e in run["errors"]]
    if errors:
        lines += ["", "## Failures", ""] + [f"- {e}" for e in errors]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if plots:
        _plots(out, rows)
    return summary


def _plots(out: Path, rows: list[Row]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install -e '.[plots]' in a clone)",
              file=sys.stderr)
        return
    _textbook_plot(out, rows, plt)
    for dim in SWEEPS:
        _sweep_plot(out, rows, dim, plt)


def _textbook_plot(out: Path, rows: list[Row], plt: Any) -> None:
    tb = _key(TEXTBOOK)
    mine = [r for r in rows if _key(r["config"]) == tb]
    if not mine:
        return
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=90)
    labels = [f"{r['framework']}\n{r['variant']}" for r in mine]
    ax.bar(range(len(mine)), [r["ms_median"] for r in mine],
           yerr=[[r["ms_median"] - r["ms_q1"] for r in mine],
                 [r["ms_q3"] - r["ms_median"] for r in mine]],
           color=[f"C{VARIANTS.index(r['variant'])}" for r in mine])  # fmt: skip
    ax.set_xticks(range(len(mine)), labels, fontsize=6)
    ax.set_yscale("log")
    ax.set_ylabel("ms per training step (log)")
    ax.set_title(f"One training step, {tb}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "textbook.png")
    plt.close(fig)


def _sweep_plot(out: Path, rows: list[Row], dim: str, plt: Any) -> None:
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    fixed = {k: v for k, v in TEXTBOOK.items() if k != dim}
    for r in rows:
        if {k: v for k, v in r["config"].items() if k != dim} == fixed:
            series.setdefault((r["framework"], r["variant"]), []).append(
                (r["config"][dim], r["ms_median"]))
    if not any(len(v) > 1 for v in series.values()):
        return
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/assemble.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", default="benchmarks/results",
                        help="the folder of the workers' JSON files (default benchmarks/results)")
    parser.add_argument("--no-plots", dest="plots", action="store_false")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not load_runs(out):
        names = ", ".join(f"{fw}.json" for fw in FRAMEWORKS)
        print(f"assemble: error: {str(out)!r} holds none of {names}; run rnn-backends bench "
              "--out there first", file=sys.stderr)
        return 2
    summary = assemble(out, plots=args.plots)
    print(f"written: {out / 'results.md'}")
    if "fastest" in summary:
        name, ms = summary["fastest"]
        print(f"fastest at the textbook configuration: {name} {ms:.2f} ms/step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
