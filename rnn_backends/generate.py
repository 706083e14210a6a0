"""Text generation from a prefix, framework-free: the backend only runs ``forward``.

Greedy decoding (no temperature) takes the arg-max; sampling draws from
softmax(logits / temperature) with a NumPy generator, so the same seed gives the same text in every
framework (given the same logits).
"""

from __future__ import annotations

import warnings

import numpy as np

from .backends.base import Backend
from .data.text import preprocess
from .data.vocab import Vocab
from .errors import UserError

# Each generated character is one forward step and the text is held whole: beyond this many,
# generate in several calls (passing the text so far as the prefix).
MAX_NUM_PREDS = 1_000_000
# Below this temperature a logit gap of 0.75 already has probability exp(-750) = 0 in float64:
# sampling is greedy decoding up to rounding, and 1/T itself overflows near 1e-308.
MIN_TEMPERATURE = 1e-3
MAX_SEED = 2**63 - 1


def check_options(num_preds: int, temperature: float | None = None, seed: int = 0) -> None:
    """Raise :class:`UserError` unless the generation options are usable (see the constants)."""
    if isinstance(num_preds, bool) or not isinstance(num_preds, int) or num_preds < 0:
        raise UserError(f"num_preds must be an integer >= 0, got {num_preds!r}")
    if num_preds > MAX_NUM_PREDS:
        raise UserError(
            f"num_preds must be at most {MAX_NUM_PREDS} (each character is one forward step and "
            f"the text is held whole; generate in several calls), got {num_preds}"
        )
    if temperature is not None:
        ok = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
        if not (ok and np.isfinite(temperature) and temperature > 0):
            raise UserError(
                f"temperature must be a finite number > 0 (omit it for greedy), got {temperature!r}"
            )
        if temperature < MIN_TEMPERATURE:
            raise UserError(
                f"temperature {temperature!r} is below {MIN_TEMPERATURE}, where sampling is greedy "
                f"decoding up to rounding; omit it for greedy or use at least {MIN_TEMPERATURE}"
            )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (
        0 <= seed <= MAX_SEED
    ):
        raise UserError(f"seed must be an integer from 0 to 2**63 - 1, got {seed!r}")


def next_token(
    logits: np.ndarray, temperature: float | None, rng: np.random.Generator | None
) -> int:
    """Pick the next id from float logits (V,): arg-max when ``temperature`` is None."""
    if temperature is None:
        return int(np.argmax(logits))
    z = np.asarray(logits, dtype=np.float64)
    # Shift before dividing: (z - max) / T is <= 0, so exp cannot overflow whatever T is.
    p = np.exp((z - z.max()) / temperature)
    cdf = np.cumsum(p)
    assert rng is not None
    # Inverse-CDF sampling written out, so the draw does not depend on NumPy's choice() internals.
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


def generate(
    backend: Backend,
    params: dict,
    vocab: Vocab,
    prefix: str,
    num_preds: int,
    temperature: float | None = None,
    seed: int = 0,
) -> str:
    """The prefix followed by ``num_preds`` generated characters.

    ``params`` are canonical NumPy weights or already the backend's tensors (as
    ``TrainResult.tensors``). The prefix is preprocessed like the corpus; characters the
    vocabulary lacks map to ``<unk>`` with a warning. ``num_preds`` is at most
    :data:`MAX_NUM_PREDS`, ``temperature`` (None: greedy) at least :data:`MIN_TEMPERATURE`,
    ``seed`` (sampling only) from 0 to 2**63 - 1.
    """
    check_options(num_preds, temperature, seed)
    text = preprocess(prefix)
    if not text.strip():
        raise UserError(f"prefix {prefix!r} has no letters; give at least one character to start")
    unknown = vocab.unknown_tokens(text)
    if unknown:
        warnings.warn(
            f"prefix characters {''.join(unknown)!r} are not in the vocabulary; they are read as "
            "<unk>",
            UserWarning,
            stacklevel=2,
        )
    ids = vocab.encode(text)
    rng = np.random.default_rng(seed) if temperature is not None else None
    params = (
        backend.prepare(params) if isinstance(next(iter(params.values())), np.ndarray) else params
    )
    logits, state = backend.forward(params, ids[None, :])
    out = []
    for _ in range(num_preds):
        nxt = next_token(logits[0, -1], temperature, rng)
        out.append(nxt)
        logits, state = backend.forward(params, np.array([[nxt]], dtype=np.int64), state)
    return text + vocab.decode(out)
