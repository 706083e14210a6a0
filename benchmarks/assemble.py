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
from rnn_backends.checkpointing import atomic_stream, write_atomic  # noqa: E402

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


def _is_stock(variant: str) -> bool:
    return variant.startswith("stock:")


def _ok(r: Row) -> bool:
    """Whether the row's loss after the timed steps matched the oracle's (rows written before
    the check existed count as matching)."""
    return bool(r.get("correct", True))


def _check(r: Row) -> str:
    if "loss_rel_diff" not in r:
        return "-"
    return f"{r['loss_rel_diff']:.0e}" + ("" if _ok(r) else " WRONG")


def _textbook_row(r: Row, mine: dict[str, Row], peak: float | None) -> str:
    fast, tb = mine.get("fast"), mine.get("textbook")
    vs_fast = f"{r['ms_median'] / fast['ms_median']:.2f}x" if fast else "-"
    vs_tb = f"{tb['ms_median'] / r['ms_median']:.1f}x" if tb else "-"
    pct = f"{100 * r['gflops'] / peak:.1f}" if peak else "-"
    mem = "-" if r.get("device_peak_mb") is None else f"{r['device_peak_mb']:.0f}"
    return (
        f"| {r['framework']} | {r['variant']} | {r['ms_median']:.2f} | "
        f"[{r['ms_q1']:.2f}-{r['ms_q3']:.2f}] | {vs_fast} | {vs_tb} | "
        f"{r['tokens_per_s']:,.0f} | {r['first_step_s']:.2f} | {r['gflops']:.1f} | {pct} | "
        f"{r['rss_peak_mb']:.0f} | {mem} | {_check(r)} |"
    )


def _by_framework(rows: list[Row], cfg: dict[str, int]) -> dict[str, dict[str, Row]]:
    """``{framework: {variant: row}}`` at ``cfg``, frameworks in FRAMEWORKS order."""
    key = _key(cfg)
    out: dict[str, dict[str, Row]] = {}
    for fw in FRAMEWORKS:
        mine = {r["variant"]: r for r in rows if r["framework"] == fw and _key(r["config"]) == key}
        if mine:
            out[fw] = mine
    return out


def _ordered(mine: dict[str, Row]) -> list[Row]:
    """The package's variants in VARIANTS order, then the stock paths as measured."""
    return [mine[v] for v in VARIANTS if v in mine] + [r for v, r in mine.items()
                                                       if v not in VARIANTS]


def _textbook_table(rows: list[Row], peaks: dict[str, float]) -> tuple[list[str], dict[str, float]]:
    """The table at the textbook configuration, and its ms/step per ``framework/variant`` for
    the rows that matched the oracle."""
    lines = [f"## Every variant and stock path ({_key(TEXTBOOK)})", "",
             "| framework | variant | ms/step (median) | [q1-q3] | vs fast | own textbook vs this "
             "| tokens/s | first step (s) | GFLOP/s | % of matmul peak | peak RSS (MiB) "
             "| device peak (MiB) | loss vs oracle |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    ms: dict[str, float] = {}
    for fw, mine in _by_framework(rows, TEXTBOOK).items():
        for r in _ordered(mine):
            lines.append(_textbook_row(r, mine, peaks.get(fw)))
            if _ok(r):
                ms[f"{fw}/{r['variant']}"] = r["ms_median"]
    return lines, ms


def best_stock(mine: dict[str, Row]) -> Row | None:
    """The fastest stock path that matched the oracle, or None."""
    ok = [r for v, r in mine.items() if _is_stock(v) and _ok(r)]
    return min(ok, key=lambda r: r["ms_median"]) if ok else None


def _stock_table(rows: list[Row], cfg: dict[str, int]) -> tuple[list[str], dict[str, float]]:
    """Per framework: ``fast`` against its best stock path, and the package's ``textbook``
    against the book's code as printed; returns the lines and ``{framework: ratio}``."""
    lines = [f"## The fast step against the code users would write ({_key(cfg)})", "",
             "| framework | fast ms/step | best stock path | its ms/step | fast vs best stock "
             "| its first step (s) | fast first step (s) | textbook ms/step | book's code "
             "(stock:book) | textbook vs book |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    ratios: dict[str, float] = {}
    for fw, mine in _by_framework(rows, cfg).items():
        fast, best = mine.get("fast"), best_stock(mine)
        if fast is None or best is None:
            continue
        fast_ok = _ok(fast)
        ratio = best["ms_median"] / fast["ms_median"]
        if fast_ok:
            ratios[fw] = ratio
        tb, book = mine.get("textbook"), mine.get("stock:book")
        tb_ms = f"{tb['ms_median']:.2f}" if tb else "-"
        book_ms = f"{book['ms_median']:.2f}" if book else "-"
        tb_vs = f"{tb['ms_median'] / book['ms_median']:.2f}x" if tb and book else "-"
        lines.append(
            f"| {fw} | {fast['ms_median']:.2f}{'' if fast_ok else ' WRONG'} | {best['variant']} "
            f"| {best['ms_median']:.2f} | **{ratio:.2f}x** | {best['first_step_s']:.2f} | "
            f"{fast['first_step_s']:.2f} | {tb_ms} | {book_ms} | {tb_vs} |"
        )
    return lines, ratios


def _stock_legend(runs: list[dict[str, Any]]) -> list[str]:
    """What each stock path is, from the rows' descriptions."""
    seen: dict[tuple[str, str], str] = {}
    for run in runs:
        for r in run["results"]:
            if _is_stock(r["variant"]) and r.get("description"):
                seen.setdefault((r["framework"], r["variant"]), r["description"])
    if not seen:
        return []
    return ["", "Stock paths (rnn_backends/stock/): "
            + "; ".join(f"{fw} `{v}`: {d}" for (fw, v), d in seen.items()) + "."]


def _whole_run_table(runs: list[dict[str, Any]]) -> list[str]:
    """The book's whole 100-epoch run per framework (``fast`` step), where it was timed."""
    timed = [run for run in runs if run.get("whole_run")]
    if not timed:
        return []
    first = timed[0]["whole_run"]
    lines = ["", f"## The book's whole run ({first['epochs']} epochs, {first['steps']} steps, "
             f"validation after each epoch, {first['corpus']}; `fast` step)", "",
             "| framework | seconds | first step (s) | final validation perplexity |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for run in timed:
        w = run["whole_run"]
        lines.append(f"| {run['framework']} | {w['seconds']:.1f} | {w['first_step_s']:.2f} | "
                     f"{w['val_ppl']:.3f} |")  # fmt: skip
    return lines


def _gpu_table(rows: list[Row]) -> list[str]:
    """ms/step and device memory of every GPU row, per configuration, each against the faster
    of PyTorch's two cuDNN rows (``native`` and ``stock:layer``) of the same configuration."""
    gpu = [r for r in rows if r.get("device_peak_mb") is not None]
    if not gpu:
        return ["", "GPU: not run (no GPU in this run); device memory is reported on a GPU."]
    lines = ["", "## GPU", "", "| config | framework | variant | device | ms/step (median) "
             "| [q1-q3] | vs cuDNN (best torch nn.RNN) | device peak (MiB) | first step (s) "
             "| loss vs oracle |", "|---|---|---|---|---:|---|---:|---:|---:|---|"]
    for cfg in dict.fromkeys(_key(r["config"]) for r in gpu):
        here = [r for r in gpu if _key(r["config"]) == cfg]
        cudnn = min((r for r in here if r["framework"] == "torch" and _ok(r)
                     and r["variant"] in ("native", "stock:layer")),
                    key=lambda r: r["ms_median"], default=None)  # nn.RNN: cuDNN on a GPU
        for r in here:
            vs = f"{cudnn['ms_median'] / r['ms_median']:.2f}x" if cudnn else "-"
            lines.append(f"| {cfg} | {r['framework']} | {r['variant']} | {r['device']} | "
                         f"{r['ms_median']:.3f} | [{r['ms_q1']:.3f}-{r['ms_q3']:.3f}] | {vs} | "
                         f"{r['device_peak_mb']:.0f} | {r['first_step_s']:.2f} | {_check(r)} |")
    return lines


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


def matmul_bound_ms(cfg: dict[str, int], peak_gflops: float) -> float:
    """The step's useful FLOPs (``6 N H (H + V)``) at the matmul peak, in ms."""
    N = cfg["B"] * cfg["T"]
    return 6 * N * cfg["H"] * (cfg["H"] + cfg["V"]) / (peak_gflops * 1e9) * 1e3


def assemble(out: Path, plots: bool = True) -> dict[str, Any]:
    """Write ``out/results.md`` (and PNG plots when matplotlib is present) from the workers'
    JSON files; returns ``{"textbook": {fw/variant: ms}, "fastest": (fw/variant, ms),
    "fast_vs_stock": {fw: ratio}}`` (rows that missed the oracle are left out of all three)."""
    runs = load_runs(out)
    rows = [r for run in runs for r in run["results"]]
    peaks = {run["framework"]: run["matmul_peak_gflops"] for run in runs}
    stock_lines, ratios = _stock_table(rows, TEXTBOOK)
    table, ms = _textbook_table(rows, peaks)
    lines = _header(runs) + stock_lines + ["", *table]
    summary: dict[str, Any] = {"textbook": ms, "fast_vs_stock": ratios}
    if ms:
        best = min(ms, key=ms.get)
        summary["fastest"] = (best, ms[best])
        lines += ["", f"Fastest: {best} at {ms[best]:.2f} ms/step."]
        peak = peaks.get(best.split("/")[0])
        if peak:
            bound = matmul_bound_ms(TEXTBOOK, peak)
            lines[-1] += (f" Matmul-bound time in that worker (the step's useful FLOPs at its "
                          f"NumPy matmul peak): {bound:.2f} ms, {ms[best] / bound:.1f}x of it.")
    lines += _stock_legend(runs)
    lines += _whole_run_table(runs)
    summary["whole_run_s"] = {run["framework"]: run["whole_run"]["seconds"]
                              for run in runs if run.get("whole_run")}  # fmt: skip
    lines += ["", "Matmul peak (NumPy float32 1024^2, same process and threads): "
              + ", ".join(f"{fw} worker {p:.0f} GFLOP/s" for fw, p in peaks.items())]
    lines += _gpu_table(rows)
    lines += _sweep_table(rows)
    errors = [f"{run['framework']}: {e}" for run in runs for e in run["errors"]]
    if errors:
        lines += ["", "## Failures", ""] + [f"- {e}" for e in errors]
    write_atomic(out / "results.md", ("\n".join(lines) + "\n").encode("utf-8"))
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
    """Bars of ms/step per framework at the textbook configuration: the package's variants in
    colour, the stock paths grey and hatched, rows that missed the oracle left out."""
    mine = [r for fw_rows in _by_framework(rows, TEXTBOOK).values() for r in _ordered(fw_rows)
            if _ok(r)]
    if not mine:
        return
    fig, ax = plt.subplots(figsize=(9, 3.4), dpi=90)
    stock = [_is_stock(r["variant"]) for r in mine]
    bars = ax.bar(range(len(mine)), [r["ms_median"] for r in mine],
                  yerr=[[r["ms_median"] - r["ms_q1"] for r in mine],
                        [r["ms_q3"] - r["ms_median"] for r in mine]],
                  color=["0.75" if s else f"C{VARIANTS.index(r['variant'])}"
                         for r, s in zip(mine, stock, strict=True)])  # fmt: skip
    for bar, s in zip(bars, stock, strict=True):
        if s:
            bar.set_hatch("//")
    labels = [r["framework"] + "\n" + r["variant"].replace("stock:", "stock\n") for r in mine]
    ax.set_xticks(range(len(mine)), labels, fontsize=5)
    ax.set_yscale("log")
    ax.set_ylabel("ms per training step (log)")
    ax.set_title(f"One training step, {_key(TEXTBOOK)}: package variants (colour) and stock "
                 "code (grey)", fontsize=8)
    fig.tight_layout()
    with atomic_stream(out / "textbook.png") as fh:
        fig.savefig(fh, format="png")
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
    with atomic_stream(out / f"sweep_{dim}.png") as fh:
        fig.savefig(fh, format="png")
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
    for fw, ratio in summary["fast_vs_stock"].items():
        print(f"{fw}: fast is {ratio:.2f}x its best stock path")
    for fw, seconds in summary["whole_run_s"].items():
        print(f"{fw}: the book's whole run took {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
