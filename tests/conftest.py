"""Shared fixtures: the backends under test, the data directory, small models.

``pytest --backend torch --backend jax`` selects frameworks; without the option every installed
framework is tested. A selected framework that is not installed is skipped with the reason, never
counted as passed. The NumPy oracle backend is always included.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rnn_backends import ModelConfig, init_params
from rnn_backends.backends.registry import BACKENDS, available_backends, get_backend
from rnn_backends.errors import BackendUnavailableError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=None,
        help="framework backend(s) to test (repeatable); default: every installed one",
    )


def selected_backends(config: pytest.Config) -> list[str]:
    chosen = config.getoption("--backend")
    names = chosen if chosen else available_backends()
    return list(dict.fromkeys(["numpy", *names]))


def framework_backends(config: pytest.Config) -> list[str]:
    return [n for n in selected_backends(config) if n != "numpy"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", selected_backends(metafunc.config))
    if "framework_name" in metafunc.fixturenames:
        names = framework_backends(metafunc.config)
        metafunc.parametrize(
            "framework_name",
            names
            or [
                pytest.param(
                    None,
                    marks=pytest.mark.skip(reason="no framework backend selected or installed"),
                )
            ],
        )
    if "framework_variant" in metafunc.fixturenames:
        pairs = []
        for name in framework_backends(metafunc.config):
            module_variants = _variants(name)
            pairs += [pytest.param((name, v), id=f"{name}-{v}") for v in module_variants]
        metafunc.parametrize(
            "framework_variant",
            pairs
            or [
                pytest.param(
                    None,
                    marks=pytest.mark.skip(reason="no framework backend selected or installed"),
                )
            ],
        )


def _variants(name: str) -> tuple[str, ...]:
    try:
        return type(get_backend(name)).variants
    except BackendUnavailableError:
        return ("fast",)


def make_backend(name: str, dtype: str = "float64", variant: str | None = None):
    """The backend, or a skip with the reason when its framework is missing here."""
    if name not in BACKENDS:
        pytest.fail(f"unknown backend {name}")
    try:
        return get_backend(name, dtype=dtype, device="cpu", variant=variant)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding timemachine.txt, or a skip when there is none."""
    env = os.environ.get("RNN_BACKENDS_DATA")
    for folder in ([Path(env)] if env else []) + [SHARED_DATA]:
        if (folder / "timemachine.txt").is_file():
            monkeypatch.setenv("RNN_BACKENDS_DATA", str(folder))
            return folder
    pytest.skip("timemachine.txt not available (set RNN_BACKENDS_DATA)")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep tests out of the user's cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: one number per tensor, scale-free."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return float(np.max(np.abs(actual - expected))) / max(scale, 1e-300) if expected.size else 0.0


@pytest.fixture
def small_model() -> tuple[ModelConfig, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """A small RNN with weights large enough that every gradient is far from zero."""
    cfg = ModelConfig(vocab_size=11, hidden_size=7, init_sigma=0.4)
    params = init_params(cfg, seed=3)
    rng = np.random.default_rng(5)
    params["b_h"] = rng.normal(0, 0.3, params["b_h"].shape)
    params["b_q"] = rng.normal(0, 0.3, params["b_q"].shape)
    X = rng.integers(0, cfg.vocab_size, size=(4, 6))
    Y = rng.integers(0, cfg.vocab_size, size=(4, 6))
    return cfg, params, X, Y
