"""One environment per framework: MXNet 1.9.1 needs numpy<1.24, JAX and TensorFlow need numpy 2.

nox                 # every test session and lint (what CI runs)
nox -s torch        # one framework
nox -s compare      # the main job: train in every framework, write the report
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "core", "core_numpy1", "torch", "jax", "tensorflow", "mxnet"]

PYTHON = "3.11"
ROOT = Path(__file__).parent
SHARED_DATA = ROOT.parent / "shared" / "data"
# The local CPU wheel; a bare "torch" requirement could resolve to a multi-GB CUDA build.
TORCH = "torch==2.13.0"


def _env() -> dict[str, str]:
    env: dict[str, str] = {}
    if "RNN_BACKENDS_DATA" in os.environ:
        env["RNN_BACKENDS_DATA"] = os.environ["RNN_BACKENDS_DATA"]
    elif (SHARED_DATA / "timemachine.txt").is_file():
        env["RNN_BACKENDS_DATA"] = str(SHARED_DATA)
    return env


def _pytest(session: nox.Session, backend: str) -> None:
    session.run("pytest", "--backend", backend, *session.posargs, env=_env())


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
    writes benchmarks/results (one JSON per framework), then benchmarks/assemble.py writes
    results.md and PNGs there. A few minutes with the default preset;
    `nox -s bench -- --preset sweep` adds the T, H and B sweeps."""
    session.install(".[plots]")
    pythons = [f"--python={fw}={_framework_python(session, fw)}" for fw in FRAMEWORK_INSTALLS]
    session.run("rnn-backends", "bench", *pythons, *session.posargs, env=_env())
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--out", default="benchmarks/results")
    session.run("python", "benchmarks/assemble.py", out.parse_known_args(session.posargs)[0].out)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "rnn_backends", "tests", "benchmarks", "noxfile.py")


@nox.session(python=PYTHON)
def core(session: nox.Session) -> None:
    """The framework-free core and the NumPy oracle, on numpy 2 (with the report's plots)."""
    session.install(".[test,plots]")
    _pytest(session, "numpy")


@nox.session(python=PYTHON)
def core_numpy1(session: nox.Session) -> None:
    """The same core suite on numpy 1.23.5, the version MXNet 1.9.1 needs."""
    session.install(".[test]", "numpy==1.23.5")
    _pytest(session, "numpy")


@nox.session(python=PYTHON)
def torch(session: nox.Session) -> None:
    session.install(TORCH)
    # safetensors: tests/test_export.py reads the package's safetensors files with it.
    session.install(".[torch,test]", "safetensors>=0.4")
    _pytest(session, "torch")


@nox.session(python=PYTHON)
def jax(session: nox.Session) -> None:
    session.install(".[jax,test]")
    _pytest(session, "jax")


@nox.session(python=PYTHON)
def tensorflow(session: nox.Session) -> None:
    session.install(".[tensorflow,test]")
    _pytest(session, "tensorflow")


@nox.session(python=PYTHON)
def mxnet(session: nox.Session) -> None:
    session.install(".[mxnet,test]")
    _pytest(session, "mxnet")
