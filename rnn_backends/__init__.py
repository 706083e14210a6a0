"""rnn-backends: the textbook's char-level RNN language model in four frameworks, checked
against one NumPy oracle.

``import rnn_backends`` imports no deep-learning framework; a backend's framework is imported when
:func:`get_backend` first asks for it.
"""

from .backends.registry import available_backends, get_backend
from .checkpointing import Checkpoint, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import CharBatches, Corpus, Vocab, load_corpus, preprocess
from .errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    CorpusError,
    DownloadError,
    NonFiniteError,
    UserError,
)
from .params import init_params, param_shapes

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "CharBatches",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "Corpus",
    "CorpusError",
    "DownloadError",
    "ModelConfig",
    "NonFiniteError",
    "TrainConfig",
    "UserError",
    "Vocab",
    "__version__",
    "available_backends",
    "get_backend",
    "init_params",
    "load_checkpoint",
    "load_corpus",
    "param_shapes",
    "preprocess",
    "save_checkpoint",
]
