"""What a clone installs and where commands write: py.typed ships, the bench writes to a
git-ignored folder by default, and the CLI names the backend it chose when none was given."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import rnn_backends
from rnn_backends.backends.registry import BACKENDS
from rnn_backends.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
TINY = ["--batch-size", "16", "--num-steps", "8", "--num-train", "128", "--num-val", "32",
        "--epochs", "1", "--hidden-size", "8", "--num-preds", "0", "--no-progress"]  # fmt: skip


def test_the_package_is_marked_typed():
    assert (Path(rnn_backends.__file__).parent / "py.typed").is_file()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["rnn_backends"]


def test_bench_writes_to_a_git_ignored_folder_unless_told():
    default = build_parser().parse_args(["bench"]).out
    assert Path(default).parts[0] != "benchmarks"  # never the published results by default
    # nox -s bench uses the same folder (it also passes it to benchmarks/assemble.py).
    assert re.search(rf'^BENCH_OUT = "{re.escape(default)}"$', (REPO / "noxfile.py").read_text(),
                     re.M)  # fmt: skip
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    probe = subprocess.run([git, "check-ignore", "-q", f"{default}/torch.json"], cwd=REPO)
    assert probe.returncode == 0, f"{default}/ is not git-ignored"


def test_train_without_a_backend_says_which_it_chose(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rnn_backends", "train", "--dtype", "float64", "--out",
         str(tmp_path), *TINY],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    said = out.stderr.splitlines()
    assert len(said) == 1, out.stderr  # one line, nothing else with --no-progress
    m = re.fullmatch(r"rnn-backends: no --backend given, using (\w+)(?: \((.+): not installed\))?",
                     said[0])  # fmt: skip
    assert m, said[0]
    assert out.stdout.startswith(f"{m[1]} (")  # the run used the backend it named
    assert importlib.util.find_spec(BACKENDS[m[1]].framework) is not None
    for name in m[2].split(", ") if m[2] else []:  # the ones passed over are really missing
        assert importlib.util.find_spec(BACKENDS[name].framework) is None, name
