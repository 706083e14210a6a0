"""Framework-free data: preprocessing, vocabulary, corpus sources and batching."""

from .batching import CharBatches, sequential_batches, windows
from .corpus import Corpus, load_corpus, timemachine_path
from .default_corpus import default_text
from .text import preprocess, tokenize
from .vocab import UNK, Vocab

__all__ = [
    "UNK",
    "CharBatches",
    "Corpus",
    "Vocab",
    "default_text",
    "load_corpus",
    "preprocess",
    "sequential_batches",
    "timemachine_path",
    "tokenize",
    "windows",
]
