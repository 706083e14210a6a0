"""The command line: info, train, generate. (The table of bad inputs, through the CLI and the
API, is tests/test_bad_input.py.)"""

from __future__ import annotations

import subprocess
import sys

TINY = [
    "--batch-size",
    "16",
    "--num-steps",
    "8",
    "--num-train",
    "256",
    "--num-val",
    "64",
    "--epochs",
    "1",
    "--hidden-size",
    "8",
    "--no-progress",
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rnn_backends", *args], capture_output=True, text=True, timeout=300
    )


def test_info_lists_backends():
    out = run_cli("info")
    assert out.returncode == 0
    for name in ("numpy", "torch", "jax", "tensorflow", "mxnet"):
        assert name in out.stdout


def test_train_then_generate_round_trip(tmp_path):
    out = run_cli(
        "train",
        "--backend",
        "numpy",
        "--dtype",
        "float64",
        "--out",
        str(tmp_path),
        "--num-preds",
        "10",
        *TINY,
    )
    assert out.returncode == 0, out.stderr
    assert "validation perplexity" in out.stdout
    gen = run_cli(
        "generate",
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--prefix",
        "the",
        "--num-preds",
        "12",
    )
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("the")
    # The train command printed the same greedy continuation for its own prefix.
    gen2 = run_cli(
        "generate",
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--prefix",
        "the clock",
        "--num-preds",
        "10",
    )
    assert gen2.stdout.strip() == out.stdout.strip().splitlines()[-1]


def test_generate_errors_through_a_real_process(tmp_path):
    assert run_cli("train", "--backend", "numpy", "--out", str(tmp_path), *TINY).returncode == 0
    ck = str(tmp_path / "checkpoint")
    for args, needle in [
        (["--temperature", "0"], "temperature must be a finite number > 0"),
        (["--num-preds", "-1"], "num_preds must be an integer >= 0"),
    ]:
        out = run_cli("generate", "--checkpoint", ck, "--prefix", "the", *args)
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    weights = next((tmp_path / "checkpoint").glob("params-*.npz"))
    weights.write_bytes(weights.read_bytes()[:100])
    out = run_cli("generate", "--checkpoint", ck, "--prefix", "the")
    assert out.returncode == 2 and "truncated or corrupted" in out.stderr


def test_unknown_prefix_characters_warn(tmp_path):
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abc cab bca " * 200)
    out = run_cli(
        "train",
        "--backend",
        "numpy",
        "--corpus",
        str(corpus),
        "--out",
        str(tmp_path / "run"),
        *TINY,
    )
    assert out.returncode == 0, out.stderr
    out = run_cli(
        "generate",
        "--checkpoint",
        str(tmp_path / "run" / "checkpoint"),
        "--prefix",
        "abz",
        "--num-preds",
        "3",
    )
    assert out.returncode == 0
    assert "warning" in out.stderr and "'z'" in out.stderr and "<unk>" in out.stderr
    assert out.stdout.startswith("abz")


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_cli("train", "--backend", "numpy", "--out", str(blocker / "sub"), *TINY)
    assert out.returncode == 2 and "cannot create output directory" in out.stderr
