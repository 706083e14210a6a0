"""Framework adapters behind one interface; see :mod:`.base`."""

from .base import Backend, StepResult
from .registry import BACKENDS, FRAMEWORKS, available_backends, get_backend, is_installed

__all__ = [
    "BACKENDS",
    "FRAMEWORKS",
    "Backend",
    "StepResult",
    "available_backends",
    "get_backend",
    "is_installed",
]
