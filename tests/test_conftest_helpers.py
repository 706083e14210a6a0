"""The test machinery itself: ``rel_err``, the static variant lists, and the selection by owner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, make_backend, rel_err

from rnn_backends.backends.registry import BACKENDS, FRAMEWORKS, is_installed


def test_rel_err_is_max_abs_difference_over_max_abs_expected():
    expected = np.array([[2.0, -4.0], [1.0, 0.5]])
    actual = expected + np.array([[0.0, 1e-3], [-2e-3, 0.0]])
    assert rel_err(actual, expected) == pytest.approx(2e-3 / 4.0, rel=1e-12)
    assert rel_err(expected, expected) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["actual", "expected"])
def test_rel_err_fails_on_non_finite_values(bad, side):
    good = np.ones((2, 3))
    poisoned = good.copy()
    poisoned[1, 2] = bad
    args = (poisoned, good) if side == "actual" else (good, poisoned)
    with pytest.raises(AssertionError, match=f"{side} has 1 NaN/inf"):
        rel_err(*args)


def test_rel_err_fails_on_shape_mismatch_even_when_broadcastable():
    with pytest.raises(AssertionError):
        rel_err(np.ones((3, 1)), np.ones(3))


def test_spec_variants_are_the_backends_variants(backend_name):
    """The fixtures take each backend's variants from the registry's spec, without importing the
    framework; the class must agree, or a variant would go untested."""
    backend = make_backend(backend_name)
    assert tuple(type(backend).variants) == BACKENDS[backend_name].variants


TEST_FILE = """
from conftest import make_backend

def test_core():
    pass

def test_builds_another_framework():
    make_backend("{other}")

def test_each_framework(framework_name):
    pass
"""


def test_selection_by_owner_in_a_sandbox(tmp_path):
    """Run pytest with this conftest on a small suite, selecting the core and one framework that
    is not installed here: what is selected, deselected, skipped and never imported."""
    absent = next((name for name in FRAMEWORKS if not is_installed(name)), None)
    if absent is None:
        pytest.skip("every framework is installed here; the sandbox needs a missing one")
    other = next(name for name in BACKENDS if name not in ("numpy", absent))
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_suite.py").write_text(TEST_FILE.format(other=other))
    # Importing this file would be a collection error: it must not be imported at all.
    (tmp_path / f"test_{other}_specific.py").write_text("raise RuntimeError('imported')\n")
    record = tmp_path / "record.json"
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--backend", "numpy",
         "--backend", absent, "--record-selection", str(record)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    seen = json.loads(record.read_text())
    node = "test_suite.py::"
    assert seen["collected"] == {
        f"{node}test_core": "numpy",
        f"{node}test_builds_another_framework": "numpy",
        **{f"{node}test_each_framework[{n}]": n for n in BACKENDS if n in FRAMEWORKS},
    }
    assert seen["selected"] == [
        f"{node}test_core", f"{node}test_builds_another_framework",
        f"{node}test_each_framework[{absent}]",
    ]
    assert out.returncode == 1, out.stdout
    assert f"PASSED {node}test_core" in out.stdout
    assert f"owned by 'numpy' but builds a '{other}' backend" in out.stdout
    assert f"is not installed here; pip install -e '.[{absent}]' in a clone" in out.stdout
    assert "1 failed, 1 passed, 1 skipped, 3 deselected" in out.stdout
    assert "RuntimeError" not in out.stdout
