"""Turn the compare job's per-framework records into ``report.md``, ``report.json`` and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

ORACLE = "numpy"


def _load(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b| (one number per tensor)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return float(np.max(np.abs(a - b))) / scale if scale > 0 else float(np.max(np.abs(a - b)))


def _grad_diff(folder: Path, oracle_folder: Path) -> tuple[float, str]:
    with np.load(folder / "grads0.npz") as g, np.load(oracle_folder / "grads0.npz") as o:
        diffs = {k: rel_diff(g[k], o[k]) for k in o.files}
    worst = max(diffs, key=diffs.get)
    return diffs[worst], worst


def compare_records(out: Path, names: list[str], status: dict[str, str], tol: dict[str, float]):
    """Per framework: its record plus differences to the oracle, and a list of failures."""
    oracle = _load(out / ORACLE / "record.json")
    oracle_x = _load(out / ORACLE / "interchange.json") or {}
    rows, failures = [], []
    for name in names:
        rec = _load(out / name / "record.json")
        row: dict[str, Any] = {"backend": name, "status": status.get(name, "missing")}
        rows.append(row)
        if rec is None or status.get(name) != "ok":
            if name == ORACLE or not status.get(name, "").startswith("not installed"):
                failures.append(f"{name}: {status.get(name, 'no record')}")
            continue
        row.update(rec)
        row["interchange"] = _load(out / name / "interchange.json") or {}
        if oracle is None or name == ORACLE:
            continue
        ours, ref = np.array(rec["step_loss"]), np.array(oracle["step_loss"])
        if ours.shape != ref.shape:
            failures.append(f"{name}: {len(ours)} steps recorded, the oracle has {len(ref)}")
            continue
        loss_diff = np.abs(ours - ref) / np.abs(ref)
        worst_step = int(np.argmax(loss_diff))
        row["loss_diff"] = float(loss_diff[worst_step])
        row["loss_diff_step"] = worst_step
        row["grad_diff"], row["grad_diff_param"] = _grad_diff(out / name, out / ORACLE)
        val, val_ref = rec["epochs"][-1]["val_ppl"], oracle["epochs"][-1]["val_ppl"]
        row["val_ppl_diff"] = abs(val - val_ref) / val_ref
        if not row["grad_diff"] <= tol["grad"]:
            failures.append(
                f"{name}: step-0 gradient of {row['grad_diff_param']} differs from the oracle by "
                f"{row['grad_diff']:.2e} (relative; tolerance {tol['grad']:.0e})"
            )
        if not row["loss_diff"] <= tol["loss"]:
            failures.append(
                f"{name}: training loss differs from the oracle at step {worst_step} by "
                f"{row['loss_diff']:.2e} (relative; tolerance {tol['loss']:.0e})"
            )
        if not row["val_ppl_diff"] <= tol["ppl"]:
            failures.append(
                f"{name}: final validation perplexity {val:.6f} vs oracle {val_ref:.6f}"
            )
        if rec["dtype"] == "float64" and rec["greedy_text"] != oracle["greedy_text"]:
            failures.append(f"{name}: greedy text differs from the oracle's")
        # Checkpoint interchange: this framework evaluating every framework's checkpoint.
        inter = row["interchange"]
        for source, got in inter.items():
            ref_x = oracle_x.get(source)
            if ref_x is None:
                continue
            if not abs(got["val_ppl"] - ref_x["val_ppl"]) <= tol["ppl"] * ref_x["val_ppl"]:
                failures.append(
                    f"{name}: loading {source}'s checkpoint gives validation perplexity "
                    f"{got['val_ppl']:.6f}, the oracle gets {ref_x['val_ppl']:.6f}"
                )
            if rec["dtype"] == "float64" and got["greedy_text"] != ref_x["greedy_text"]:
                failures.append(f"{name}: greedy text from {source}'s checkpoint differs")
    return rows, failures


def _fmt(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _markdown(rows, failures, spec, tol, wall) -> str:
    t = spec.train
    lines = [
        "# rnn-backends comparison report",
        "",
        f"Corpus `{spec.corpus}`; cell `{spec.model['cell']}`, hidden {spec.model['hidden_size']},"
        f" vocab {spec.model['vocab_size']}; batch {t['batch_size']} x {t['num_steps']} steps "
        f"({t['batching']} batching), lr {t['lr']}, clip {t['grad_clip']}, {t['max_epochs']} "
        f"epochs, seed {t['seed']}, {t['dtype']}. Same initial weights and batches everywhere.",
        f"Tolerances vs the oracle (relative): step-0 gradients {tol['grad']:.0e}, per-step loss "
        f"{tol['loss']:.0e}, perplexity {tol['ppl']:.0e}. Wall time of the job: {wall:.1f} s.",
        "",
        "| framework | version | variant | device | train ppl | val ppl | worst step-loss diff "
        "| worst step-0 grad diff | ms/step (IQR) | tokens/s | first step s | greedy text |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "epochs" not in r:
            lines.append(f"| {r['backend']} | {r['status']} | | | | | | | | | | |")
            continue
        last = r["epochs"][-1]
        loss = (
            "oracle"
            if r["backend"] == ORACLE
            else (f"{_fmt(r.get('loss_diff'), '.1e')} (step {r.get('loss_diff_step', '-')})")
        )
        grad = (
            "oracle"
            if r["backend"] == ORACLE
            else (f"{_fmt(r.get('grad_diff'), '.1e')} ({r.get('grad_diff_param', '-')})")
        )
        text = r["greedy_text"].replace("|", "/")
        lines.append(
            f"| {r['title']} | {r['version']} | {r['variant']} | {r['device']} | "
            f"{_fmt(last['train_ppl'], '.4f')} | {_fmt(last['val_ppl'], '.4f')} | "
            f"{loss} | {grad} | "
            f"{r['median_step_ms']:.1f} ({r['iqr_step_ms']:.1f}) | {r['tokens_per_s']:,.0f} | "
            f"{r['first_step_s']:.2f} | `{text}` |"
        )
    inter_rows = [r for r in rows if r.get("interchange")]
    if inter_rows:
        sources = sorted({s for r in inter_rows for s in r["interchange"]})
        lines += [
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
    lines += ["", "## Verdict", ""]
    if failures:
        lines.append(f"**FAIL**: {len(failures)} departure(s) from the oracle:")
        lines += [f"- {f}" for f in failures]
    else:
        ok = [r["backend"] for r in rows if r.get("status") == "ok" and r["backend"] != ORACLE]
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
    lines += ["", "![perplexity](perplexity.png)", "", "![time per step](step_time.png)", ""]
    return "\n".join(lines)


def _plots(out: Path, rows) -> list[str]:
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


def write_report(out: Path, names: list[str], status: dict[str, str], spec, wall: float):
    from .compare import TOLERANCES

    tol = TOLERANCES[spec.train["dtype"]]
    rows, failures = compare_records(out, names, status, tol)
    if len(names) > 1 and not any(status.get(n) == "ok" for n in names if n != ORACLE):
        failures.append("no framework could run; install one or pass --python NAME=PATH")
    plots = _plots(out, rows)
    report = {
        "spec": spec.__dict__,
        "tolerance": tol,
        "wall_s": wall,
        "frameworks": rows,
        "failures": failures,
        "passed": not failures,
        "plots": plots,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(_markdown(rows, failures, spec, tol, wall))
    return report
