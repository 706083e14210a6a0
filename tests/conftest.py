"""Shared fixtures: which backend a test is about, the data directory, small models.

Every test has exactly one *owner*, the backend it is about, carried as a marker of that name:

- a test that takes ``backend_name``, ``framework_name`` or ``framework_variant`` is owned by the
  backend of its parameter (the parameter carries the marker);
- a test in ``test_<framework>_specific.py`` is owned by that framework;
- every other test is owned by ``numpy``: the framework-free core and the oracle.

``pytest --backend torch --backend jax`` runs only the tests owned by those backends and
deselects the rest (``--backend numpy`` is the core suite); without the option every test runs.
``-m torch`` selects by the same markers. The parameters are static (each backend's variants come
from the registry's spec), so collecting imports no framework, and a framework-specific file is
not even imported unless its framework is selected. A selected framework that is not installed is
skipped with the reason, never counted as passed.

``--record-selection FILE`` writes what was collected and selected as JSON; the nox session
``no_lost_tests`` joins these records to show that every test runs in some session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rnn_backends import ModelConfig, init_params
from rnn_backends.backends.registry import (
    BACKENDS,
    FRAMEWORKS,
    canonical_name,
    get_backend,
    install_hint,
    is_installed,
)
from rnn_backends.errors import BackendUnavailableError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Framework backends in the registry's order; "numpy" owns everything that is framework-free.
FRAMEWORK_NAMES = tuple(name for name in BACKENDS if name in FRAMEWORKS)
CORE = "numpy"
# Whole files about one framework; they import it at module level.
FILE_OWNERS = {f"test_{name}_specific.py": name for name in FRAMEWORK_NAMES}


# --- the parametrization, in one place ------------------------------------------------------------


def _param(value: object, owner: str, id: str) -> object:
    return pytest.param(value, id=id, marks=getattr(pytest.mark, owner))


BACKEND_PARAMS = [_param(name, name, name) for name in BACKENDS]
FRAMEWORK_PARAMS = [_param(name, name, name) for name in FRAMEWORK_NAMES]
VARIANT_PARAMS = [
    _param((name, variant), name, f"{name}-{variant}")
    for name in FRAMEWORK_NAMES
    for variant in BACKENDS[name].variants
]


def _installed(name: str) -> str:
    """``name``, or a skip with the reason when its framework is not installed here."""
    if not is_installed(name):
        pytest.skip(f"{BACKENDS[name].title} is not installed here; {install_hint(name)}")
    return name


@pytest.fixture(params=BACKEND_PARAMS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """Every backend, the NumPy oracle included."""
    return _installed(request.param)


@pytest.fixture(params=FRAMEWORK_PARAMS)
def framework_name(request: pytest.FixtureRequest) -> str:
    """Every framework backend (not the oracle)."""
    return _installed(request.param)


@pytest.fixture(params=VARIANT_PARAMS)
def framework_variant(request: pytest.FixtureRequest) -> tuple[str, str]:
    """Every (framework, variant) pair, e.g. ``("torch", "native")``."""
    name, variant = request.param
    return _installed(name), variant


# --- owners and selection -------------------------------------------------------------------------

_COLLECTED = pytest.StashKey[dict]()  # node id -> owner, before deselection
_SKIPPED_FILES: list[str] = []  # files that skipped as a whole when imported
_RUNNING_OWNER: list[str] = [CORE]  # the owner of the test being set up or run


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        action="append",
        default=None,
        help="run only the tests owned by this backend (repeatable; numpy = the core suite); "
        "default: every test",
    )
    parser.addoption(
        "--record-selection",
        default=None,
        metavar="FILE",
        help="write the collected and the selected test ids, with their owners, to FILE (JSON)",
    )


def pytest_configure(config: pytest.Config) -> None:
    for name in BACKENDS:
        config.addinivalue_line("markers", f"{name}: the test is about the {name} backend")


def chosen_backends(config: pytest.Config) -> tuple[str, ...]:
    """The backends named by ``--backend`` (canonical names), or all of them."""
    names = config.getoption("--backend")
    if not names:
        return tuple(BACKENDS)
    try:
        return tuple(dict.fromkeys(canonical_name(n) for n in names))
    except BackendUnavailableError as exc:
        raise pytest.UsageError(f"--backend: {exc}") from None


def owner(item: pytest.Item) -> str:
    """The one backend that ``item`` is about (its backend marker)."""
    owners = {m.name for m in item.iter_markers() if m.name in BACKENDS}
    if len(owners) != 1:
        raise pytest.UsageError(
            f"{item.nodeid} is marked for {sorted(owners)}; a test belongs to exactly one backend"
        )
    return owners.pop()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Do not even import a framework's own test file when that framework is not selected."""
    name = FILE_OWNERS.get(collection_path.name)
    if name is not None and name not in chosen_backends(config):
        return True
    return None


@pytest.hookimpl(tryfirst=True)  # before ``-m`` reads the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not any(m.name in BACKENDS for m in item.iter_markers()):
            mark = FILE_OWNERS.get(item.path.name, CORE)
            item.add_marker(getattr(pytest.mark, mark))
    chosen = chosen_backends(config)
    keep = [item for item in items if owner(item) in chosen]
    dropped = [item for item in items if owner(item) not in chosen]
    config.stash[_COLLECTED] = {item.nodeid: owner(item) for item in items}
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Remember files that skipped as a whole at import (e.g. ``importorskip`` at the top)."""
    if report.skipped and report.nodeid.endswith(".py"):
        _SKIPPED_FILES.append(report.nodeid)


def pytest_collection_finish(session: pytest.Session) -> None:
    """With ``--record-selection FILE``: every collected test id with its owner, the selected
    ids, and the files that skipped as a whole, for noxfile's ``no_lost_tests``."""
    path = session.config.getoption("--record-selection")
    if not path:
        return
    record = {
        "backends": list(chosen_backends(session.config)),
        "collected": session.config.stash.get(_COLLECTED, {}),
        "selected": [item.nodeid for item in session.items],
        "skipped_modules": sorted(set(_SKIPPED_FILES)),
    }
    # Under pytest-xdist every worker collects the same tests and writes the same record: each
    # replaces the file whole (a temporary file renamed over it), so none is read half-written.
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


@pytest.hookimpl(tryfirst=True)  # before any fixture of the test can call make_backend
def pytest_runtest_setup(item: pytest.Item) -> None:
    _RUNNING_OWNER[0] = owner(item)


# --- helpers --------------------------------------------------------------------------------------


def make_backend(name: str, dtype: str = "float64", variant: str | None = None):
    """The backend, or a skip with the reason when its framework is missing here.

    Only the oracle and the running test's own backend may be built: a numpy-owned test that
    built a torch backend would run in no session with torch installed, so it fails instead.
    """
    if name not in BACKENDS:
        pytest.fail(f"unknown backend {name}")
    if name not in (CORE, _RUNNING_OWNER[0]):
        pytest.fail(
            f"this test is owned by {_RUNNING_OWNER[0]!r} but builds a {name!r} backend; "
            "take framework_name/backend_name or put it in a file owned by that framework"
        )
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
    """max |actual - expected| / max |expected| over two arrays of one shape: one scale-free
    number per tensor.

    A shape mismatch or a NaN/inf on either side is an assertion failure, not a number: a NaN
    would compare False both ways, and ``max(0.1, nan)`` silently drops it.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    for side, values in (("actual", actual), ("expected", expected)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        assert bad == 0, f"{side} has {bad} NaN/inf value(s) of {values.size}"
    if expected.size == 0:
        return 0.0
    scale = float(np.max(np.abs(expected)))
    return float(np.max(np.abs(actual - expected))) / max(scale, 1e-300)


def adamw_steps_match_the_oracle(backend, params, X, Y, tol: float) -> tuple[object, object]:
    """Six AdamW steps at changing rates and clip thresholds (0: none) against the oracle's,
    every loss and every weight within ``tol``; returns the backend's (weights, optimizer state)
    so that a test can count the traces of its compiled step."""
    import math

    from rnn_backends import optim, reference

    opt = optim.Optimizer("adamw", weight_decay=0.2)
    tensors, opt_state, state = backend.prepare(params), None, None
    oracle, o_opt, o_state = dict(params), reference.optimizer_state(params, "adamw"), None
    for lr, clip in ((0.01, 1.0), (0.02, 0.05), (0.04, 0), (0.03, 7.0), (0.01, 0.5), (0.0, 1.0)):
        res = backend.train_step(tensors, X, Y, state, lr=lr, grad_clip=clip, optimizer=opt,
                                 opt_state=opt_state)  # fmt: skip
        tensors, state, opt_state = res.params, res.state, res.opt_state
        oracle, o_loss, _, o_state, o_opt = reference.model_optimizer_step(
            oracle, X, Y, o_state, lr, clip if clip else math.inf, o_opt, "adamw",
            weight_decay=0.2,
        )
        assert abs(res.loss - o_loss) / o_loss <= tol
        for k, v in backend.export(tensors).items():
            assert rel_err(v, oracle[k]) <= tol, k
    return tensors, opt_state


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
