"""rnn-backends: the textbook's char-level RNN language model in four frameworks, checked
against one NumPy oracle.

``import rnn_backends`` imports nothing heavy, no deep-learning framework and not even NumPy: the
public names below are looked up on first use (PEP 562), and a backend's framework is imported
when :func:`get_backend` first asks for it. So the command line's entry point
(:mod:`rnn_backends.__main__`) imports every dependency inside its Ctrl-C handler.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS = {
    "available_backends": "backends.registry",
    "get_backend": "backends.registry",
    "Checkpoint": "checkpointing",
    "load_checkpoint": "checkpointing",
    "save_checkpoint": "checkpointing",
    "ModelConfig": "config",
    "TrainConfig": "config",
    "CharBatches": "data",
    "Corpus": "data",
    "Vocab": "data",
    "load_corpus": "data",
    "preprocess": "data",
    "BackendUnavailableError": "errors",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "CorpusError": "errors",
    "DiskFullError": "errors",
    "DownloadError": "errors",
    "FolderInUseError": "errors",
    "NonFiniteError": "errors",
    "UserError": "errors",
    "init_params": "params",
    "param_shapes": "params",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rnn_backends' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found once, then an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
