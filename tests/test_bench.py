"""The benchmark's plumbing: a worker started through the command line writes its JSON, and
benchmarks/assemble.py lays JSON files out as tables. Timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnn_backends.benchrun import TEXTBOOK
from rnn_backends.cli import main

ASSEMBLE = Path(__file__).resolve().parents[1] / "benchmarks" / "assemble.py"


def test_bench_runs_a_worker_and_writes_its_json(tmp_path, capsys):
    """One timed step of the oracle at the textbook configuration, in a worker process."""
    argv = ["bench", "--frameworks", "numpy", "--variants", "reference", "--sweeps", "",
            "--steps", "1", "--warmup", "0", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert str(tmp_path / "numpy.json") in capsys.readouterr().out
    run = json.loads((tmp_path / "numpy.json").read_text())
    assert run["errors"] == [] and run["threads"] == 1
    (row,) = run["results"]
    assert (row["framework"], row["variant"], row["config"], row["steps"]) == (
        "numpy", "reference", TEXTBOOK, 1)


def _row(fw: str, variant: str, ms: float, gflops: float, correct: bool = True,
         **config: int) -> dict:
    return {"framework": fw, "variant": variant, "config": {**TEXTBOOK, **config},
            "ms_median": ms, "ms_q1": ms - 1, "ms_q3": ms + 1, "tokens_per_s": 1000.0,
            "first_step_s": 0.5, "gflops": gflops, "rss_peak_mb": 300.0,
            "device_peak_mb": None, "loss_rel_diff": 1e-9 if correct else 0.5,
            "correct": correct,
            "description": "what it is" if "stock" in variant else ""}  # fmt: skip


def _run(fw: str, rows: list[dict], peak: float, errors: list[str] = ()) -> dict:
    return {"framework": fw, "machine": "x86_64, 2 cores", "threads": 1, "dtype": "float32",
            "matmul_peak_gflops": peak, "results": rows, "errors": list(errors)}  # fmt: skip


def _cells(md: str, section: str) -> dict[tuple[str, str], list[str]]:
    """The rows of the table that follows ``section``, keyed by their first two cells."""
    text = md.split(section, 1)[1].split("\n## ", 1)[0]
    cells = [[c.strip() for c in line.split("|")] for line in text.splitlines()]
    return {(c[1], c[2]): c for c in cells if len(c) > 3 and c[1] in ("torch", "jax")}


def test_assemble_lays_out_ratios_peaks_stock_and_sweeps(tmp_path):
    runs = {
        "torch": _run("torch", [_row("torch", "textbook", 12.0, 10.0),
                                _row("torch", "fast", 4.0, 30.0),
                                _row("torch", "native", 6.0, 20.0),
                                _row("torch", "stock:book", 10.0, 12.0),
                                _row("torch", "stock:layer", 8.0, 15.0),
                                _row("torch", "stock:compiled", 2.0, 60.0, correct=False),
                                _row("torch", "fast", 9.0, 40.0, H=64)], peak=200.0),
        "jax": _run("jax", [_row("jax", "fast", 5.0, 25.0), _row("jax", "stock:scan", 6.0, 1.0)],
                    peak=100.0, errors=["native {...}: RuntimeError: boom"]),
    }  # fmt: skip
    for fw, run in runs.items():
        (tmp_path / f"{fw}.json").write_text(json.dumps(run))
    out = subprocess.run([sys.executable, str(ASSEMBLE), str(tmp_path), "--no-plots"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # The wrong stock path (2 ms) is neither the fastest nor anyone's best stock path.
    assert "fastest at the textbook configuration: torch/fast 4.00 ms/step" in out.stdout
    assert "torch: fast is 2.00x its best stock path" in out.stdout  # stock:layer 8 / fast 4
    assert "jax: fast is 1.20x its best stock path" in out.stdout  # 6 / 5
    md = (tmp_path / "results.md").read_text()
    vs_stock = _cells(md, "## The fast step against the code users would write")
    # fast, best stock, its ms, ratio, ..., textbook 12, book 10, textbook vs book 1.2x
    torch_row = vs_stock["torch", "4.00"]
    assert torch_row[3:6] == ["stock:layer", "8.00", "**2.00x**"]
    assert torch_row[8:11] == ["12.00", "10.00", "1.20x"]
    every = _cells(md, "## Every variant and stock path")
    fast = every["torch", "fast"]
    # vs fast 1.00x, textbook / fast = 3.0x, 30 / 200 = 15.0 % of the matmul peak
    assert fast[5:7] == ["1.00x", "3.0x"] and fast[10] == "15.0"
    assert every["torch", "stock:compiled"][13] == "5e-01 WRONG"
    assert every["jax", "fast"][5:7] == ["1.00x", "-"] and every["jax", "fast"][10] == "25.0"
    # 6 N H (H + V) = 6 * 32768 * 32 * 60 FLOPs at 200 GFLOP/s: 1.89 ms; 4 / 1.89 = 2.1x
    assert "Matmul-bound time in that worker" in md and ": 1.89 ms, 2.1x of it." in md
    assert "torch `stock:layer`: what it is" in md
    assert "| torch | fast | V=28 H=64 B=1024 T=32 | 9.00 |" in md  # the sweep row
    assert "- jax: native {...}: RuntimeError: boom" in md


def test_assemble_refuses_a_folder_without_results(tmp_path):
    out = subprocess.run([sys.executable, str(ASSEMBLE), str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "holds none of torch.json" in out.stderr
    assert not (tmp_path / "results.md").exists()


def test_gpu_rows_get_their_own_table_with_memory_and_the_cudnn_ratio(tmp_path):
    large = {"H": 256, "B": 512, "T": 128}
    rows = [dict(_row("torch", v, ms, 1.0, **cfg), device="cuda:0 (H200)", device_peak_mb=mb)
            for v, ms, mb, cfg in (("fast", 0.4, 12.0, {}), ("native", 0.8, 30.0, {}),
                                   ("stock:layer", 0.6, 20.0, {}), ("fast", 3.0, 200.0, large),
                                   ("native", 2.4, 300.0, large))]  # fmt: skip
    rows.append(dict(_row("jax", "fast", 0.5, 1.0), device="cuda:0", device_peak_mb=9.0))
    for fw in ("torch", "jax"):
        run = _run(fw, [r for r in rows if r["framework"] == fw], peak=100.0)
        (tmp_path / f"{fw}.json").write_text(json.dumps(run))
    out = subprocess.run([sys.executable, str(ASSEMBLE), str(tmp_path), "--no-plots"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    gpu = (tmp_path / "results.md").read_text().split("## GPU", 1)[1]
    cells = [[c.strip() for c in line.split("|")] for line in gpu.splitlines() if "cuda" in line]
    got = {(c[1], c[2], c[3]): (c[7], c[8]) for c in cells}
    tb, lg = "V=28 H=32 B=1024 T=32", "V=28 H=256 B=512 T=128"
    # The cuDNN reference is the faster correct cuDNN row of its configuration: stock:layer
    # (0.6 ms) at the textbook size, native (2.4 ms) at the large one.
    assert got[tb, "torch", "fast"] == ("1.50x", "12")  # 0.6 / 0.4
    assert got[tb, "jax", "fast"] == ("1.20x", "9")  # 0.6 / 0.5
    assert got[lg, "torch", "fast"] == ("0.80x", "200")  # 2.4 / 3.0


def test_gpu_workers_run_one_variant_each_and_merge(tmp_path, monkeypatch):
    """On a GPU every variant runs in a worker of its own (JAX's memory peak is per process);
    the parts become one file per framework, in order, and are removed."""
    from rnn_backends import benchrun

    calls = []

    def fake_launch(python, args, threads=None):
        variants = args[args.index("--variants") + 1]
        calls.append(variants)
        part = {"framework": "jax", "results": [{"variant": variants}], "errors": []}
        Path(args[args.index("--json") + 1]).write_text(json.dumps(part))
        return benchrun.WorkerOutcome(("python",), 0)

    monkeypatch.setattr(benchrun, "launch", fake_launch)
    outcomes = benchrun.run(tmp_path, {}, ["jax"], device="gpu")
    assert outcomes["jax"].ok
    assert calls == ["fast", "native", "stock:layer", "stock:scan"]
    merged = json.loads((tmp_path / "jax.json").read_text())
    assert [r["variant"] for r in merged["results"]] == calls
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jax.json"]


def test_the_whole_run_is_the_books_schedule_and_is_tabled(tmp_path):
    """``whole_run`` trains the textbook preset (10 steps of B=1024 per epoch on the embedded
    corpus; one epoch and a small validation split here) and learns; assemble tables it."""
    from rnn_backends.bench import whole_run

    w = whole_run("numpy", "float32", None, {"max_epochs": 1, "num_val": 64})
    assert (w["epochs"], w["steps"]) == (1, 10)
    assert 1.0 < w["val_ppl"] < 27  # below the uniform distribution over the 27 characters
    run = {**_run("torch", [_row("torch", "fast", 4.0, 30.0)], peak=200.0), "whole_run": w}
    (tmp_path / "torch.json").write_text(json.dumps(run))
    out = subprocess.run([sys.executable, str(ASSEMBLE), str(tmp_path), "--no-plots"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"torch: the book's whole run took {w['seconds']:.1f} s" in out.stdout
    md = (tmp_path / "results.md").read_text()
    assert "## The book's whole run (1 epochs, 10 steps" in md
    assert f"| torch | {w['seconds']:.1f} | {w['first_step_s']:.2f} | {w['val_ppl']:.3f} |" in md


def test_data_parallel_plot_draws_every_framework_file(tmp_path):
    """benchmarks/data_parallel.py --plot reads each framework's rows (written by its own
    environment with --out) and draws them in one PNG."""
    pytest.importorskip("matplotlib")
    script = ASSEMBLE.with_name("data_parallel.py")
    for fw, ms in (("torch", 10.0), ("jax", 20.0)):
        rows = [{"framework": fw, "workers": "one process", "median_ms": ms},
                *({"framework": fw, "workers": n, "median_ms": ms * (1 + n / 10)}
                  for n in (1, 2, 4))]  # fmt: skip
        (tmp_path / f"{fw}.json").write_text(json.dumps(rows))
    out = subprocess.run([sys.executable, str(script), "--plot", str(tmp_path)],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    png = (tmp_path / "data_parallel.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
