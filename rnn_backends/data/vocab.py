"""The textbook's vocabulary: sorted unique tokens plus ``<unk>`` and any reserved tokens."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import CorpusError

UNK = "<unk>"


class Vocab:
    """Maps tokens to integer ids and back.

    The ordering is the textbook's: the sorted set of ``<unk>``, the reserved tokens and every
    token seen at least ``min_freq`` times. For the Time Machine this gives ``' '`` = 0,
    ``'<unk>'`` = 1, ``'a'`` = 2, ... Unknown tokens map to the id of ``<unk>``.

    Arguments:
        tokens: the corpus tokens (characters).
        min_freq: tokens seen fewer times are left out (they become ``<unk>``).
        reserved_tokens: tokens always present, whether seen or not.
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        min_freq: int = 0,
        reserved_tokens: Sequence[str] = (),
    ) -> None:
        counter = collections.Counter(tokens)
        self.token_freqs = sorted(counter.items(), key=lambda kv: kv[1], reverse=True)
        kept = {tok for tok, freq in self.token_freqs if freq >= min_freq}
        self.idx_to_token: list[str] = sorted(kept | {UNK} | set(reserved_tokens))
        self.token_to_idx = {tok: i for i, tok in enumerate(self.idx_to_token)}

    @classmethod
    def from_tokens_list(cls, idx_to_token: Sequence[str]) -> Vocab:
        """Rebuild a vocabulary from its saved ``idx_to_token`` list (keeps the order as saved)."""
        if UNK not in idx_to_token or len(set(idx_to_token)) != len(idx_to_token):
            raise CorpusError(
                f"a saved vocabulary must list unique tokens including {UNK!r}; got "
                f"{len(idx_to_token)} tokens"
            )
        vocab = cls()
        vocab.idx_to_token = list(idx_to_token)
        vocab.token_to_idx = {tok: i for i, tok in enumerate(vocab.idx_to_token)}
        return vocab

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.idx_to_token == other.idx_to_token

    def __hash__(self) -> int:
        return hash(tuple(self.idx_to_token))

    @property
    def unk(self) -> int:
        return self.token_to_idx[UNK]

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Token ids as an int64 array; unknown tokens become ``<unk>``."""
        unk = self.unk
        return np.array([self.token_to_idx.get(t, unk) for t in tokens], dtype=np.int64)

    def unknown_tokens(self, tokens: Iterable[str]) -> list[str]:
        """The distinct tokens of ``tokens`` that this vocabulary does not know, in order seen."""
        seen: dict[str, None] = {}
        for t in tokens:
            if t not in self.token_to_idx:
                seen.setdefault(t)
        return list(seen)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.idx_to_token[int(i)] for i in ids)
