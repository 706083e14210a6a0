"""Backend registry: lazy imports, clear errors for unknown or missing frameworks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

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
    with pytest.raises(BackendUnavailableError, match=r"pip install 'rnn-backends\[mxnet\]'"):
        rnn_backends.get_backend("mxnet")


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
