"""The worker launcher shared by the compare job and the benchmark: --python NAME=PATH, the
worker's environment, and how a worker ended. (Its bad inputs are in tests/test_bad_input.py.)"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

import rnn_backends
from rnn_backends import workers
from rnn_backends.workers import launch, parse_pythons, worker_env


def test_python_names_are_canonical(tmp_path):
    python = tmp_path / "python"
    python.write_text("")
    got = parse_pythons([f"pytorch={python}", f"TF={python}", f"mxnet={python}"])
    assert got == {"torch": str(python), "tensorflow": str(python), "mxnet": str(python)}


def test_exit_status_and_killing_signal_are_reported(tmp_path):
    exited = launch(sys.executable, ["-c", "raise SystemExit(3)"])
    assert not exited.ok and exited.describe() == "exited with status 3"
    kill = f"import os, signal; os.kill(os.getpid(), signal.{signal.SIGTERM.name})"
    killed = launch(sys.executable, ["-c", kill])
    assert not killed.ok and killed.describe() == "was killed by SIGTERM"
    assert launch(sys.executable, ["-c", "pass"]).describe() == "exited with status 0"


def test_a_worker_imports_this_package_and_gets_the_thread_settings(tmp_path, monkeypatch):
    """Whether this package is a source checkout or installed, the worker imports this same copy,
    even with no PYTHONPATH of ours and started from another folder."""
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "seen.json"
    probe = (
        "import json, os, sys, rnn_backends; "
        "seen = [rnn_backends.__file__, os.environ.get('OMP_NUM_THREADS')]; "
        f"json.dump(seen, open({str(report)!r}, 'w'))"
    )
    assert launch(sys.executable, ["-c", probe], threads=2).ok
    assert json.loads(report.read_text()) == [rnn_backends.__file__, "2"]


def test_only_a_source_checkout_goes_on_the_workers_path(tmp_path, monkeypatch):
    """An installed package's folder is site-packages: it must never reach another framework's
    interpreter (MXNet's environment needs numpy 1.23, not this one's)."""
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setattr(workers, "_PACKAGE_ROOT", tmp_path)  # no pyproject.toml: installed
    assert worker_env()["PYTHONPATH"] == "/elsewhere"
    (tmp_path / "pyproject.toml").write_text("")  # a checkout
    assert worker_env()["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/elsewhere"]


@pytest.mark.skipif(os.name != "posix", reason="a shell script as the interpreter")
@pytest.mark.parametrize("signal_name", ["KILL", "FPE"])
def test_a_killed_compare_worker_is_named_in_the_report(tmp_path, signal_name):
    """A framework whose worker dies by a signal (SIGKILL, as the out-of-memory killer sends;
    SIGFPE, as MXNet 1.9.1 raised on an empty product) fails the job with the signal's name;
    the oracle's run is unaffected and the report is written."""
    from rnn_backends.compare import default_spec, run_compare

    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nkill -{signal_name} $$\n")
    python.chmod(0o755)
    spec = default_spec(overrides={"hidden_size": 8, "batch_size": 16, "num_steps": 8,
                                   "max_epochs": 1, "num_train": 64, "num_val": 16})
    report = run_compare(tmp_path / "report", ["torch"], spec, {"torch": str(python)},
                         log=lambda *_: None)
    rows = {r["backend"]: r for r in report["frameworks"]}
    assert rows["numpy"]["status"] == "ok"
    killed = f"worker was killed by SIG{signal_name}"
    assert rows["torch"]["status"].startswith(f"failed in train: {killed}")
    assert not report["passed"]
    assert killed in Path(tmp_path / "report" / "report.md").read_text()
