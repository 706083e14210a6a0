"""Text preprocessing as the textbook does it: letters only, lowercase, one token per character."""

from __future__ import annotations

import re

_NON_LETTERS = re.compile(r"[^A-Za-z]+")


def preprocess(text: str) -> str:
    """Replace every run of non-letters with one space and lowercase the rest.

    >>> preprocess("The Time-Machine, 1898!")
    'the time machine '
    """
    return _NON_LETTERS.sub(" ", text).lower()


def tokenize(text: str) -> list[str]:
    """Character tokens of already preprocessed text."""
    return list(text)
