"""Backend registry: lazy imports, clear errors for unknown or missing frameworks."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import rnn_backends
from rnn_backends.backends import registry
from rnn_backends.errors import BackendUnavailableError, ConfigError


def test_import_loads_no_framework(framework_name):
    """Runs in each framework's session, where an eager import of it would show."""
    code = (
        "import sys, json, rnn_backends; rnn_backends.available_backends(); "
        "from rnn_backends import cli; cli.build_parser(); "
        "print(json.dumps([m for m in ('torch','jax','tensorflow','mxnet','flax','keras') "
        "if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_get_backend_imports_only_its_framework(framework_name):
    """Runs in each framework's session, where an eager import of it would show."""
    code = (
        "import sys, json, rnn_backends; rnn_backends.get_backend('numpy'); "
        "print(json.dumps([m for m in ('torch','jax','tensorflow','mxnet') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_unknown_backend_lists_choices():
    with pytest.raises(BackendUnavailableError, match="unknown backend 'caffe'.*numpy, torch"):
        rnn_backends.get_backend("caffe")


def test_missing_framework_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mxnet" else real(name, *a)
    )
    assert "mxnet" not in rnn_backends.available_backends()
    # The package is not on PyPI: the hint installs the clone, or names the nox session.
    with pytest.raises(BackendUnavailableError,
                       match=r"pip install -e '\.\[mxnet\]' in a clone.*nox -s mxnet"):  # fmt: skip
        rnn_backends.get_backend("mxnet")


@pytest.mark.parametrize("name", [n for n in registry.BACKENDS if n != "numpy"])
def test_each_install_hint_names_an_extra_and_a_session_that_exist(name):
    """Against pyproject.toml and noxfile.py themselves: a hint whose extra or session was
    renamed would send users to a command that fails."""
    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    sessions = re.findall(r"^def (\w+)\(session", (root / "noxfile.py").read_text(), re.M)
    hint = registry.install_hint(name)
    (extra,) = re.findall(r"pip install -e '\.\[(\w+)\]'", hint)
    (session,) = re.findall(r"nox -s (\w+)", hint)
    assert extra in extras and session in sessions
    assert "rnn-backends[" not in hint  # the published-package form that cannot work


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ({"numpy"}, "numpy"),
        ({"numpy", "mxnet"}, "mxnet"),
        ({"numpy", "mxnet", "tensorflow"}, "tensorflow"),
        ({"numpy", "tensorflow", "jax"}, "jax"),
        ({"numpy", "jax", "torch", "mxnet"}, "torch"),
    ],
)
def test_the_default_backend_is_the_first_installed_framework(monkeypatch, installed, expected):
    monkeypatch.setattr(registry, "is_installed", lambda name: name in installed)
    assert registry.default_backend() == expected


def test_aliases_and_numpy_always_available():
    assert registry.canonical_name("TF") == "tensorflow"
    assert registry.canonical_name("pytorch") == "torch"
    assert "numpy" in rnn_backends.available_backends()


def test_bad_dtype_and_device():
    with pytest.raises(ConfigError, match="dtype"):
        rnn_backends.get_backend("numpy", dtype="float16")
    with pytest.raises(ConfigError, match="device"):
        rnn_backends.get_backend("numpy", device="tpu")
    with pytest.raises(ConfigError, match="CPU only"):
        rnn_backends.get_backend("numpy", device="gpu")


def test_options_are_checked_and_the_error_names_the_accepted_ones():
    with pytest.raises(ConfigError, match="backend 'numpy' has no option 'unroll'; it accepts "
                                          "gru_reset_after, strict$"):
        rnn_backends.get_backend("numpy", unroll=4)
    with pytest.raises(ConfigError, match="strict must be True or False, got 'yes'"):
        rnn_backends.get_backend("numpy", strict="yes")
    assert rnn_backends.get_backend("numpy", strict=True).strict is True
