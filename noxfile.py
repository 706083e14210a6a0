"""One environment per framework: MXNet 1.9.1 needs numpy<1.24, JAX and TensorFlow need numpy 2.

nox                 # lint, every test session, then no_lost_tests (what CI runs)
nox -s torch        # only the tests about one framework
nox -s compare      # the main job: train in every framework, write the report

Each test session runs the tests owned by one backend (``pytest --backend NAME``, see
tests/conftest.py): core and core_numpy1 the framework-free suite and the oracle, each framework
session only the tests about that framework.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import nox

# Test session -> the backend whose tests it runs.
TEST_SESSIONS = {
    "core": "numpy",
    "core_numpy1": "numpy",
    "torch": "torch",
    "jax": "jax",
    "tensorflow": "tensorflow",
    "mxnet": "mxnet",
}

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", *TEST_SESSIONS, "no_lost_tests"]

PYTHON = "3.11"
ROOT = Path(__file__).parent
SHARED_DATA = ROOT.parent / "shared" / "data"
# The local CPU wheel; a bare "torch" requirement could resolve to a multi-GB CUDA build.
TORCH = "torch==2.13.0"
# Where `nox -s bench` writes unless --out says otherwise: untracked, so a run never overwrites
# the published benchmarks/results/. The CLI's default (rnn_backends/cli.py) is the same folder.
BENCH_OUT = "bench-results"


# For the tests, XLA's compiled programs are kept on disk: JAX tests compile the same small
# programs again and again (a new backend per test, workers in fresh processes), and XLA's compile
# was about half of the JAX session's time. Keyed by the program and the JAX version, so a changed
# step recompiles. Not for bench or compare: they report the first step's compile time.
JAX_CACHE = {
    "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".nox" / "jax-compilation-cache"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
}


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    if "RNN_BACKENDS_DATA" in os.environ:
        env["RNN_BACKENDS_DATA"] = os.environ["RNN_BACKENDS_DATA"]
    elif (SHARED_DATA / "timemachine.txt").is_file():
        env["RNN_BACKENDS_DATA"] = str(SHARED_DATA)
    return env


# Each full test session records what it collected and selected here, under a digest of the code.
SELECTION = ROOT / ".nox" / "selection"


def _code_digest() -> str:
    """A digest of the tests, the package and the pytest settings: a record made from other code
    is stale."""
    digest = hashlib.sha256()
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("rnn_backends/**/*.py")]
    files.append(ROOT / "pyproject.toml")
    for path in sorted(files):
        digest.update(f"{path.relative_to(ROOT)}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


# A full session runs its tests in this many pytest-xdist workers: most tests keep one core busy
# (small arrays, compiling, starting processes), so two workers on this 2-core CPU cut a session's
# wall time; more than 4 would only multiply the frameworks' memory.
TEST_WORKERS = str(min(os.cpu_count() or 1, 4))


def _pytest(session: nox.Session) -> None:
    """The tests owned by this session's backend. A run narrowed by arguments records nothing
    and runs in one process."""
    record = SELECTION / _code_digest() / f"{session.name}.json"
    record.unlink(missing_ok=True)
    args = session.posargs or ["-n", TEST_WORKERS, "--record-selection", str(record)]
    session.run("pytest", "--backend", TEST_SESSIONS[session.name], *args,
                env={**_env(), **JAX_CACHE})


# What each framework's environment needs, for the tests and for the compare job.
FRAMEWORK_INSTALLS = {
    "torch": [TORCH, ".[torch]"],
    "mxnet": [".[mxnet]"],
    "jax": [".[jax]"],
    "tensorflow": [".[tensorflow]"],
}


def _framework_python(session: nox.Session, framework: str) -> str:
    """A virtual environment of its own for ``framework`` (made once, then updated)."""
    env = ROOT / ".nox" / f"compare-{framework}"
    python = env / "bin" / "python"
    if not python.exists():
        session.run("python", "-m", "venv", str(env))
    session.run(str(python), "-m", "pip", "install", "--quiet",
                *FRAMEWORK_INSTALLS[framework], external=True)
    return str(python)


@nox.session(python=PYTHON)
def compare(session: nox.Session) -> None:
    """The main job: every framework in its own environment, one report (./report)."""
    session.install(".[plots]")
    pythons = [f"--python={fw}={_framework_python(session, fw)}" for fw in FRAMEWORK_INSTALLS]
    session.run("rnn-backends", "compare", *pythons, *session.posargs, env=_env())


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Training-step benchmark: every framework in its own environment, one after another;
    writes bench-results/ (git-ignored; one JSON per framework), then benchmarks/assemble.py
    writes results.md and PNGs there. `-- --out benchmarks/results` replaces the published
    figures. A few minutes with the default preset; `nox -s bench -- --preset sweep` adds the T,
    H and B sweeps."""
    session.install(".[plots]")
    pythons = [f"--python={fw}={_framework_python(session, fw)}" for fw in FRAMEWORK_INSTALLS]
    session.run("rnn-backends", "bench", *pythons, *session.posargs, env=_env())
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", default=BENCH_OUT)
    session.run("python", "benchmarks/assemble.py", out.parse_known_args(session.posargs)[0].out)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff over everything, mypy over the package (settings in pyproject.toml). The package is
    installed with its dependencies so that mypy sees NumPy's and tqdm's types."""
    session.install(".[lint]")
    session.run("ruff", "check", "rnn_backends", "tests", "benchmarks", "noxfile.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """The tests owned by numpy: the framework-free core and the oracle, on numpy 2 (with the
    report's plots and the TensorBoard event files)."""
    session.install(".[test,plots,tensorboard]")
    _pytest(session)


@nox.session(python=PYTHON)
def core_numpy1(session: nox.Session) -> None:
    """The same tests on numpy 1.23.5: the MXNet environment runs the whole core on it."""
    session.install(".[test]", "numpy==1.23.5")
    _pytest(session)


@nox.session(python=PYTHON)
def torch(session: nox.Session) -> None:
    """The tests owned by torch: its instances of the shared tests (no file of its own)."""
    session.install(TORCH)
    # safetensors: tests/test_export.py reads the package's safetensors files with it.
    session.install(".[torch,test]", "safetensors>=0.4")
    _pytest(session)


@nox.session(python=PYTHON)
def jax(session: nox.Session) -> None:
    """The tests owned by jax: its instances of the shared tests, and test_jax_specific.py."""
    session.install(".[jax,test]")
    _pytest(session)


@nox.session(python=PYTHON)
def tensorflow(session: nox.Session) -> None:
    """The tests owned by tensorflow: its shared-test instances, test_tensorflow_specific.py."""
    session.install(".[tensorflow,test]")
    _pytest(session)


@nox.session(python=PYTHON)
def mxnet(session: nox.Session) -> None:
    """The tests owned by mxnet: its instances of the shared tests, and test_mxnet_specific.py."""
    session.install(".[mxnet,test]")
    _pytest(session)


@nox.session(python=False)
def no_lost_tests(session: nox.Session) -> None:
    """Every test that some session collects is run by some session.

    Reads the records that the test sessions wrote for the current code (``nox`` runs them
    first). Each environment collects what it can import: the parametrized tests everywhere,
    ``test_<framework>_specific.py`` only where that framework is selected.
    """
    folder = SELECTION / _code_digest()
    missing = [name for name in TEST_SESSIONS if not (folder / f"{name}.json").is_file()]
    if missing:
        session.error(
            f"no record of {', '.join(missing)} for the current code: run those sessions "
            "without arguments first (plain `nox` runs everything in order)"
        )
    records = [json.loads((folder / f"{name}.json").read_text()) for name in TEST_SESSIONS]
    collected = {node: owner for r in records for node, owner in r["collected"].items()}
    selected = {node for r in records for node in r["selected"]}
    lost = sorted(set(collected) - selected)
    files = {node.split("::")[0] for node in collected}
    never_imported = sorted({m for r in records for m in r["skipped_modules"]} - files)
    if lost:
        session.error(f"{len(lost)} test(s) run in no session, e.g. {lost[:10]}")
    if never_imported:
        session.error(f"test files skipped as a whole in every session: {never_imported}")
    owners = dict(Counter(collected.values()))
    session.log(f"all {len(collected)} collected tests run in some session; by owner: {owners}")
