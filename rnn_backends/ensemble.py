"""An ensemble of legitimate float32 computations: the NumPy oracle, permuted.

The model is exactly equivariant under a consistent relabelling of the hidden units of each layer
(permute the columns of every ``W_x*``, ``W_h*`` and ``b_*`` of the layer, the rows of its
``W_h*``, and the rows of whatever reads its output: the next layer's ``W_x*`` or ``W_hq``) and
under a reordering of the rows of a batch. In exact arithmetic such a member computes the same
numbers; in floating point every dot product and every sum over tokens runs in another order, so
each member rounds differently. The members' spread around the float64 oracle is the noise
band of float32 itself: what a correct float32 implementation may differ by, measured rather
than derived (:mod:`rnn_backends.numerics` derives it for one evaluation; along a trained
recurrence the derived bound grows like the product of ``|W_hh|``, far beyond the real error).

:class:`Member` wraps the NumPy backend: canonical weights, batches, states and optimizer slots
go in and come out as usual, permuted inside every call and put back after it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends.base import StepResult
from .params import infer_model


@dataclass(frozen=True)
class Permutation:
    """One member's relabelling: a permutation of the hidden units per layer and of the batch
    rows (drawn from ``seed``; seed 0 is the identity, the plain float32 oracle)."""

    seed: int
    hidden: tuple[np.ndarray, ...] = field(repr=False)
    rows: np.ndarray = field(repr=False)

    @staticmethod
    def draw(seed: int, hidden_size: int, num_layers: int, batch: int) -> Permutation:
        if seed == 0:
            ident = np.arange(hidden_size)
            return Permutation(0, (ident,) * num_layers, np.arange(batch))
        rng = np.random.default_rng([seed, 12])
        hidden = tuple(rng.permutation(hidden_size) for _ in range(num_layers))
        return Permutation(seed, hidden, rng.permutation(batch))

    # --- parameters ------------------------------------------------------------------------------

    def _axes(self, name: str, num_layers: int, directions: int) -> tuple[Any, Any]:
        """(row index, column index) of parameter ``name`` under this relabelling (None: keep)."""
        if name == "b_q":
            return None, None
        if name == "W_hq":
            return self._stacked(num_layers - 1, directions), None
        layer = int(name[1 : name.index(".")]) if name.startswith("l") and "." in name else 0
        short = name.rsplit(".", 1)[-1]
        cols = self.hidden[layer]
        if short.startswith("b_"):
            return cols, None
        if short.startswith("W_h"):
            return cols, cols
        rows = None if layer == 0 else self._stacked(layer - 1, directions)  # W_x*
        return rows, cols

    def _stacked(self, layer: int, directions: int) -> np.ndarray:
        """The permutation of a layer's output, (H * directions,): each direction's block."""
        H = len(self.hidden[layer])
        return np.concatenate([self.hidden[layer] + d * H for d in range(directions)])

    def params(self, params: dict[str, np.ndarray], inverse: bool = False) -> dict[str, np.ndarray]:
        """Every tensor relabelled (or put back, ``inverse``); names and shapes unchanged."""
        model = infer_model(params)
        out = {}
        for name, p in params.items():
            rows, cols = self._axes(name, model.num_layers, model.num_directions)
            out[name] = _permute(p, rows, cols, inverse)
        return out

    # --- batches and states ----------------------------------------------------------------------

    def batch(self, X: np.ndarray) -> np.ndarray:
        return X[self.rows]

    def state(self, state: tuple[np.ndarray, ...] | None, num_layers: int, directions: int,
              inverse: bool = False) -> tuple[np.ndarray, ...] | None:  # fmt: skip
        """A public state (tuple of (L * D, B, H)) with rows and hidden units relabelled."""
        if state is None:
            return None
        out = []
        for s in state:
            s = np.array(s)
            for k in range(s.shape[0]):
                cols = self.hidden[k // directions]
                s[k] = _permute(s[k], self.rows, cols, inverse)
            out.append(s)
        return tuple(out)


def _permute(x: np.ndarray, rows: Any, cols: Any, inverse: bool) -> np.ndarray:
    """``x[rows][:, cols]`` (1-D: ``x[rows]``), or the inverse relabelling."""
    x = np.asarray(x)
    if inverse:
        out = np.empty_like(x)
        if x.ndim == 1:
            out[rows if rows is not None else slice(None)] = x
            return out
        idx_r = rows if rows is not None else np.arange(x.shape[0])
        idx_c = cols if cols is not None else np.arange(x.shape[1])
        out[np.ix_(idx_r, idx_c)] = x
        return out
    if x.ndim == 1:
        return x[rows] if rows is not None else x.copy()
    if rows is not None:
        x = x[rows]
    return x[:, cols] if cols is not None else x.copy()


class Member:
    """A NumPy-backend float32 (or float64) computation under one :class:`Permutation`.

    It speaks the backend's interface with canonical NumPy arrays (``loss``, ``loss_and_grads``,
    ``train_step``, ``prepare``, ``export``), so ``train`` runs it like any backend.
    """

    def __init__(self, backend: Any, seed: int) -> None:
        self._backend = backend
        self.seed = seed
        self._perms: dict[tuple[int, int, int], Permutation] = {}

    def __getattr__(self, name: str) -> Any:  # name, dtype, device, version, prepare, export...
        return getattr(self._backend, name)

    def _perm(self, params: dict[str, np.ndarray], batch: int) -> tuple[Permutation, Any]:
        model = infer_model(params, self._backend.gru_reset_after)
        key = (model.hidden_size, model.num_layers, batch)
        if key not in self._perms:
            self._perms[key] = Permutation.draw(self.seed, *key)
        return self._perms[key], model

    def _state_in(self, perm, model, state):
        if state is None:
            return None
        state = tuple(np.asarray(s) for s in state)
        return perm.state(state, model.num_layers, model.num_directions)

    def _state_out(self, perm, model, state):
        return perm.state(tuple(np.asarray(s) for s in state), model.num_layers,
                          model.num_directions, inverse=True)  # fmt: skip

    def loss(self, params, X, Y, state=None):
        perm, model = self._perm(params, X.shape[0])
        value, final = self._backend.loss(perm.params(params), perm.batch(X), perm.batch(Y),
                                          self._state_in(perm, model, state))  # fmt: skip
        return value, self._state_out(perm, model, final)

    def loss_and_grads(self, params, X, Y, state=None):
        perm, model = self._perm(params, X.shape[0])
        value, grads = self._backend.loss_and_grads(
            perm.params(params), perm.batch(X), perm.batch(Y), self._state_in(perm, model, state)
        )
        return value, perm.params(grads, inverse=True)

    def train_step(self, params, X, Y, state=None, **kwargs) -> StepResult:
        perm, model = self._perm(params, X.shape[0])
        extra = dict(kwargs)
        if extra.get("opt_state") is not None:
            extra["opt_state"] = _map_slots(extra["opt_state"], perm.params)
        res = self._backend.train_step(perm.params(params), perm.batch(X), perm.batch(Y),
                                       self._state_in(perm, model, state), **extra)  # fmt: skip
        opt_state = getattr(res, "opt_state", None)
        if opt_state is not None:
            opt_state = _map_slots(opt_state, lambda s: perm.params(s, inverse=True))
        out = StepResult(perm.params(res.params, inverse=True), res.loss, res.grad_norm,
                         self._state_out(perm, model, res.state))  # fmt: skip
        if opt_state is not None:
            out.opt_state = opt_state
        return out


def _map_slots(opt_state: Any, fn: Any) -> Any:
    """An optimizer state with ``fn`` applied to each slot (a dict of per-parameter arrays)."""
    slots = {name: fn({k: np.asarray(v) for k, v in arrays.items()})
             for name, arrays in opt_state.slots.items()}  # fmt: skip
    return dataclasses.replace(opt_state, slots=slots)


__all__ = ["Member", "Permutation"]
