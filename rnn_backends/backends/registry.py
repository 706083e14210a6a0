"""Backend lookup. Nothing here imports a framework: a backend's module (and with it its
framework) is imported only when :func:`get_backend` asks for it."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from ..errors import BackendUnavailableError
from .base import VARIANTS, Backend


@dataclass(frozen=True)
class BackendSpec:
    name: str
    module: str
    cls: str
    framework: str  # the top-level module to probe
    extra: str | None  # pip extra that installs it
    title: str
    variants: tuple[str, ...] = VARIANTS  # known without importing the framework (tests use it)


BACKENDS: dict[str, BackendSpec] = {
    s.name: s
    for s in (
        BackendSpec(
            "numpy", "numpy_backend", "NumpyBackend", "numpy", None, "NumPy oracle", ("reference",)
        ),
        BackendSpec("torch", "torch_backend", "TorchBackend", "torch", "torch", "PyTorch"),
        BackendSpec("jax", "jax_backend", "JaxBackend", "jax", "jax", "JAX"),
        BackendSpec(
            "tensorflow",
            "tensorflow_backend",
            "TensorflowBackend",
            "tensorflow",
            "tensorflow",
            "TensorFlow",
        ),
        BackendSpec("mxnet", "mxnet_backend", "MxnetBackend", "mxnet", "mxnet", "MXNet"),
    )
}
ALIASES = {"pytorch": "torch", "tf": "tensorflow", "mx": "mxnet", "oracle": "numpy"}
FRAMEWORKS = ("torch", "mxnet", "jax", "tensorflow")
# The backend a command uses when none is named: the first of these whose framework is installed
# (MXNet, retired, last; the NumPy oracle always works, slowly).
DEFAULT_ORDER = ("torch", "jax", "tensorflow", "mxnet", "numpy")


def canonical_name(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in BACKENDS:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"
        )
    return key


def _has_module(spec: BackendSpec) -> bool:
    return importlib.util.find_spec(f"{__package__}.{spec.module}") is not None


def is_installed(name: str) -> bool:
    """Whether the framework behind ``name`` can be imported (checked without importing it)."""
    spec = BACKENDS[canonical_name(name)]
    return _has_module(spec) and importlib.util.find_spec(spec.framework) is not None


def available_backends() -> list[str]:
    """Names of the backends whose framework is installed here."""
    return [name for name in BACKENDS if is_installed(name)]


def default_backend() -> str:
    """The first backend of :data:`DEFAULT_ORDER` whose framework is installed here."""
    return next(name for name in DEFAULT_ORDER if is_installed(name))


def install_hint(name: str) -> str:
    """How to install backend ``name``'s framework: the package is installed from a clone of its
    repository (it is not on PyPI), or the framework's nox session builds an environment."""
    spec = BACKENDS[canonical_name(name)]
    if spec.extra is None:
        return "pip install numpy"
    return f"pip install -e '.[{spec.extra}]' in a clone of rnn-backends, or nox -s {spec.name}"


def get_backend(
    name: str,
    dtype: str = "float64",
    device: str | None = None,
    variant: str | None = None,
    **options: Any,
) -> Backend:
    """An instance of backend ``name`` (``numpy``, ``torch``, ``jax``, ``tensorflow``, ``mxnet``).

    ``options`` go to the backend's constructor: ``gru_reset_after`` and ``strict`` everywhere
    (see :class:`Backend`), and the backend's own (``Backend.options``, e.g. ``unroll=8`` for
    JAX's ``lax.scan``).

    Raises:
        BackendUnavailableError: unknown name, or its framework is not installed (the message
            names the pip extra to install).
        ConfigError: a bad dtype, device, variant or option (the message lists the accepted ones).
    """
    spec = BACKENDS[canonical_name(name)]
    hint = install_hint(spec.name)
    if not _has_module(spec):
        raise BackendUnavailableError(f"backend {spec.name!r} is not implemented in this version")
    if importlib.util.find_spec(spec.framework) is None:
        raise BackendUnavailableError(
            f"backend {spec.name!r} needs {spec.title}, which is not installed here; {hint}"
        )
    try:
        module = importlib.import_module(f"{__package__}.{spec.module}")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend {spec.name!r}: importing {spec.title} failed ({exc}); {hint}"
        ) from None
    backend_cls: type[Backend] = getattr(module, spec.cls)
    return backend_cls(dtype=dtype, device=device, variant=variant, **options)
