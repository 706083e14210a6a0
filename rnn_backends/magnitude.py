"""The absolute-value pass: how large the rounding error of each computed number can be.

Every result of the model (logits, the loss, each gradient entry) is computed by a chain of
floating-point operations. To first order, the rounding error of a result ``v`` is bounded by
``gamma_n * S(v)``, where ``n`` is the number of roundings along the longest chain that feeds it
and ``S(v)`` its *magnitude*: every rounded intermediate that feeds ``v``, in absolute value,
weighted by how strongly ``v`` depends on it (:mod:`rnn_backends.numerics` turns ``S`` and ``n``
into a bound). ``S`` is the computation itself carried out on absolute values, by these rules,
applied to every operation of the forward pass and of the hand-written backward pass:

    an exact input (a weight, a one-hot row, a target)   S = 0
    c = a + b  or  c = a - b                             S = S(a) + S(b) + |c|
    c = a * b                                            S = |a| S(b) + S(a) |b| + |c|
    C = A @ B, and every sum of terms                    S = |A| S(B) + S(A) |B| + |A| |B|
    c = f(a) for tanh, sigmoid, exp, log                 S = |f'(a)| S(a) + |c|
    c = a / b                                            S = S(a) / |b| + |a| S(b) / b^2 + |c|

Each rule carries the error of the inputs through the operation (with the derivative's absolute
value) and adds the operation's own rounding, which is relative to its result, or, for a sum, to
the sum of its terms in absolute value: a bias gradient that is a small difference of large sums
gets the magnitude of the sums, not of the difference.

This module computes ``S`` and the value side by side (:class:`Dual`), with the model's equations
written here a third time, independently of ``cells.py`` (the frameworks' shared math) and of
``reference.py`` (the oracle). The values it carries must equal the oracle's, which the tests
check: that is how we know the magnitudes walk the same computation. Arrays are time-major
inside, as in the oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

Params = dict[str, np.ndarray]

# The book's gate letters per cell, the candidate (tanh) gate last, as params.py names them.
_GATES = {"rnn": ("h",), "gru": ("z", "r", "h"), "lstm": ("i", "f", "o", "c")}


@dataclass(frozen=True)
class Dual:
    """A float64 value ``v`` and its magnitude ``s`` (same shape; 0 for an exact number)."""

    v: np.ndarray
    s: np.ndarray

    @staticmethod
    def exact(x: Any) -> Dual:
        x = np.asarray(x, dtype=np.float64)
        return Dual(x, np.zeros_like(x))

    def __add__(self, other: Any) -> Dual:
        o = _lift(other)
        v = self.v + o.v
        return Dual(v, self.s + o.s + np.abs(v))

    __radd__ = __add__

    def __sub__(self, other: Any) -> Dual:
        o = _lift(other)
        v = self.v - o.v
        return Dual(v, self.s + o.s + np.abs(v))

    def __rsub__(self, other: Any) -> Dual:
        return _lift(other) - self

    def __neg__(self) -> Dual:
        return Dual(-self.v, self.s)

    def __mul__(self, other: Any) -> Dual:
        o = _lift(other)
        v = self.v * o.v
        return Dual(v, np.abs(self.v) * o.s + self.s * np.abs(o.v) + np.abs(v))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Dual:
        o = _lift(other)
        v = self.v / o.v
        return Dual(v, self.s / np.abs(o.v) + np.abs(self.v) * o.s / o.v**2 + np.abs(v))

    def __matmul__(self, other: Any) -> Dual:
        o = _lift(other)
        a, b = np.abs(self.v), np.abs(o.v)
        return Dual(self.v @ o.v, a @ o.s + self.s @ b + a @ b)

    def __getitem__(self, index: Any) -> Dual:
        return Dual(self.v[index], self.s[index])

    @property
    def T(self) -> Dual:  # noqa: N802 (the numpy spelling)
        return Dual(self.v.T, self.s.T)

    def sum(self, axis: Any = None) -> Dual:
        return Dual(self.v.sum(axis=axis), (self.s + np.abs(self.v)).sum(axis=axis))


def _lift(x: Any) -> Dual:
    return x if isinstance(x, Dual) else Dual.exact(x)


def _apply(f: Callable, df: Callable, a: Dual) -> Dual:
    """``f(a)`` with derivative ``df(a.v, f(a.v))``: the input's error carried through, plus |f|."""
    y = f(a.v)
    return Dual(y, np.abs(y) + np.abs(df(a.v, y)) * a.s)


def tanh(a: Dual) -> Dual:
    return _apply(np.tanh, lambda x, y: 1.0 - y * y, a)


def sigmoid(a: Dual) -> Dual:
    return _apply(lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)), lambda x, y: y * (1.0 - y), a)


def exp(a: Dual) -> Dual:
    return _apply(np.exp, lambda x, y: y, a)


def log(a: Dual) -> Dual:
    return _apply(np.log, lambda x, y: 1.0 / x, a)


def stack(xs: list[Dual]) -> Dual:
    return Dual(np.stack([x.v for x in xs]), np.stack([x.s for x in xs]))


def concat(xs: list[Dual], axis: int) -> Dual:
    return Dual(np.concatenate([x.v for x in xs], axis), np.concatenate([x.s for x in xs], axis))


def _rows(W: Dual, ids: np.ndarray) -> Dual:
    """``onehot(ids) @ W`` for int ids (T, B): the matmul rule with an exact one-hot operand."""
    return Dual(W.v[ids], W.s[ids] + np.abs(W.v[ids]))


def _rows_grad(ids: np.ndarray, d: Dual, vocab: int) -> Dual:
    """``onehot(ids)^T @ d`` summed over (T, B): the gradient of a row gather, (V, H)."""
    v = np.zeros((vocab, d.v.shape[-1]))
    s = np.zeros_like(v)
    np.add.at(v, ids, d.v)
    np.add.at(s, ids, d.s + np.abs(d.v))
    return Dual(v, s)


def _tokens_mm(a: Dual, b: Dual) -> Dual:
    """``sum over (T, B) of a^T b``: (T, B, I) x (T, B, J) -> (I, J)."""
    flat = lambda x: Dual(x.v.reshape(-1, x.v.shape[-1]), x.s.reshape(-1, x.s.shape[-1]))  # noqa: E731
    return flat(a).T @ flat(b)


# --- the model -----------------------------------------------------------------------------------


def _structure(params: Params) -> tuple[str, int, int, int]:
    """(cell, layers, directions, hidden size) read off the names (as params.py lays them out)."""
    cell = "lstm" if "W_xi" in params else "gru" if "W_xz" in params else "rnn"
    first = _GATES[cell][0]
    layers = 1
    while f"l{layers}.W_x{first}" in params:
        layers += 1
    directions = 2 if f"rev.W_x{first}" in params else 1
    return cell, layers, directions, params["W_hq"].shape[0] // directions


def _prefix(layer: int, direction: int) -> str:
    return (f"l{layer}." if layer else "") + ("rev." if direction else "")


def _weights(params: Params, prefix: str, cell: str) -> dict[str, Dual]:
    names = [f"{k}{g}" for g in _GATES[cell] for k in ("W_x", "W_h", "b_")]
    return {n: Dual.exact(params[prefix + n]) for n in names}


def _project(w: Dual, xin: Any) -> Dual:
    return _rows(w, xin) if isinstance(xin, np.ndarray) else xin @ w


def _cell_forward(cell: str, w: dict[str, Dual], xw: dict[str, Dual], h: Dual, c: Dual | None,
                  after: bool) -> tuple[Dual, Dual | None, dict[str, Dual]]:  # fmt: skip
    """One time step: the new (h, c) and what the backward step needs."""
    if cell == "rnn":
        h_new = tanh(xw["h"] + h @ w["W_hh"] + w["b_h"])
        return h_new, None, {"h_prev": h, "h": h_new}
    if cell == "gru":
        z = sigmoid(xw["z"] + h @ w["W_hz"] + w["b_z"])
        r = sigmoid(xw["r"] + h @ w["W_hr"] + w["b_r"])
        hh = h @ w["W_hh"] if after else None
        pre = xw["h"] + w["b_h"] + r * hh if after else xw["h"] + (r * h) @ w["W_hh"] + w["b_h"]
        cand = tanh(pre)
        h_new = z * h + (1.0 - z) * cand
        cache = {"h_prev": h, "z": z, "r": r, "cand": cand}
        if hh is not None:  # only the reset-after form reads W_hh h back in the backward step
            cache["hh"] = hh
        return h_new, None, cache
    # An LSTM step always carries a cell state: _forward starts it from zeros or the given state.
    assert c is not None, "an LSTM step needs the cell state c"
    i, f, o = (sigmoid(xw[g] + h @ w["W_h" + g] + w["b_" + g]) for g in "ifo")
    g_ = tanh(xw["c"] + h @ w["W_hc"] + w["b_c"])
    c_new = f * c + i * g_
    tc = tanh(c_new)
    return o * tc, c_new, {"h_prev": h, "c_prev": c, "i": i, "f": f, "o": o, "g": g_, "tc": tc}


def _cell_backward(cell: str, w: dict[str, Dual], s: dict[str, Dual], dh: Dual,
                   dc: Dual | None, grads: dict[str, Dual],
                   after: bool) -> tuple[dict[str, Dual], Dual, Dual | None]:  # fmt: skip
    """One step of BPTT: the gate pre-activation gradients, d h_prev and d c_prev; the recurrent
    weight gradients are added into ``grads``."""
    h_prev, d_pre = s["h_prev"], {}
    if cell == "rnn":
        d_pre["h"] = dh * (1.0 - s["h"] * s["h"])
        dh_prev = d_pre["h"] @ w["W_hh"].T
        grads["W_hh"] = grads["W_hh"] + h_prev.T @ d_pre["h"]
        return d_pre, dh_prev, None
    if cell == "gru":
        z, r, cand = s["z"], s["r"], s["cand"]
        da = dh * (1.0 - z) * (1.0 - cand * cand)
        d_pre["h"] = da
        if after:
            d_hh = da * r
            dr = da * s["hh"]
            grads["W_hh"] = grads["W_hh"] + h_prev.T @ d_hh
            dh_prev = dh * z + d_hh @ w["W_hh"].T
        else:
            d_rh = da @ w["W_hh"].T
            grads["W_hh"] = grads["W_hh"] + (r * h_prev).T @ da
            dr = d_rh * h_prev
            dh_prev = dh * z + d_rh * r
        d_pre["z"] = dh * (h_prev - cand) * z * (1.0 - z)
        d_pre["r"] = dr * r * (1.0 - r)
        for g in ("z", "r"):
            grads["W_h" + g] = grads["W_h" + g] + h_prev.T @ d_pre[g]
            dh_prev = dh_prev + d_pre[g] @ w["W_h" + g].T
        return d_pre, dh_prev, None
    i, f, o, g_, tc = (s[k] for k in ("i", "f", "o", "g", "tc"))
    # An LSTM carries d c_prev from step to step: _direction_backward starts it from zeros.
    assert dc is not None, "an LSTM step needs the cell-state gradient dc"
    dc = dc + dh * o * (1.0 - tc * tc)
    d_pre["i"] = dc * g_ * i * (1.0 - i)
    d_pre["f"] = dc * s["c_prev"] * f * (1.0 - f)
    d_pre["o"] = dh * tc * o * (1.0 - o)
    d_pre["c"] = dc * i * (1.0 - g_ * g_)
    gates = _GATES[cell]
    for g in gates:
        grads["W_h" + g] = grads["W_h" + g] + h_prev.T @ d_pre[g]
    dh_prev = d_pre[gates[0]] @ w["W_h" + gates[0]].T
    for g in gates[1:]:
        dh_prev = dh_prev + d_pre[g] @ w["W_h" + g].T
    return d_pre, dh_prev, dc * f


def _zero(shape: tuple[int, ...]) -> Dual:
    return Dual(np.zeros(shape), np.zeros(shape))


@dataclass
class _Direction:
    w: dict[str, Dual]
    xin: Any  # int ids (T, B) for layer 0, else a Dual (T, B, I), in processing order
    steps: list[dict[str, Dual]]


def _forward(
    params: Params, X: np.ndarray, state: Any, after: bool
) -> tuple[Dual, list[tuple[Dual, Any]], list[Any], str]:
    """The forward pass: logits (T, B, V), the final state per layer direction, the caches."""
    cell, L, D, H = _structure(params)
    B = X.shape[0]
    xin: Any = np.ascontiguousarray(X.T)
    layers, finals = [], []
    for layer in range(L):
        outs, dirs = [], []
        for d in range(D):
            w = _weights(params, _prefix(layer, d), cell)
            k = layer * D + d
            h = Dual.exact(state[0][k]) if state is not None else _zero((B, H))
            c = None
            if cell == "lstm":
                c = Dual.exact(state[1][k]) if state is not None else _zero((B, H))
            seq = xin[::-1] if d else xin
            xw = {g: _project(w["W_x" + g], seq) for g in _GATES[cell]}
            steps, hs = [], []
            for t in range(X.shape[1]):
                h, c, cache = _cell_forward(cell, w, {g: xw[g][t] for g in xw}, h, c, after)
                steps.append(cache)
                hs.append(h)
            out = stack(hs)
            outs.append(out[::-1] if d else out)
            dirs.append(_Direction(w, seq, steps))
            finals.append((h, c))
        layers.append(dirs)
        xin = concat(outs, axis=-1) if D == 2 else outs[0]
    logits = xin @ Dual.exact(params["W_hq"]) + Dual.exact(params["b_q"])
    return logits, finals, layers + [xin], cell


def _softmax_terms(logits: Dual) -> tuple[Dual, Dual]:
    """(log-softmax, softmax) of (..., V) logits, shifted by the row maximum as everyone does."""
    top = logits.v.argmax(axis=-1)[..., None]
    shift = Dual(np.take_along_axis(logits.v, top, -1), np.take_along_axis(logits.s, top, -1))
    z = logits - shift
    e = exp(z)
    total = e.sum(axis=-1)
    total = Dual(total.v[..., None], total.s[..., None])
    return z - log(total), e / total


@dataclass(frozen=True)
class Magnitudes:
    """What :func:`loss_and_grads` returns: values (the float64 oracle's numbers, recomputed)
    and magnitudes of the loss, the gradient of every parameter, the logits (B, T, V) and the
    final state (a tuple of (layers * directions, B, H) arrays, ``(h,)`` or ``(h, c)``)."""

    loss: Dual
    grads: dict[str, Dual]
    logits: Dual
    state: tuple[Dual, ...]


def loss_and_grads(params: Params, X: np.ndarray, Y: np.ndarray, state: Any = None, *,
                   gru_reset_after: bool = True) -> Magnitudes:  # fmt: skip
    """Values and magnitudes of the loss, the gradients, the logits and the final state.

    Arguments:
        params: canonical weights (any float dtype; computed in float64).
        X, Y: int ids (B, T); state: ``None`` (zeros) or the public state tuple.
    """
    params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    if state is not None:
        state = tuple(np.asarray(s, dtype=np.float64) for s in state)
    logits, finals, caches, cell = _forward(params, X, state, gru_reset_after)
    *layers, top = caches
    B, T = X.shape
    N = B * T
    logp, p = _softmax_terms(logits)
    rows_t, rows_b = np.meshgrid(np.arange(T), np.arange(B), indexing="ij")
    picked = logp[rows_t, rows_b, Y.T]
    loss = -(picked.sum() / float(N))
    onehot = np.zeros(p.v.shape)
    onehot[rows_t, rows_b, Y.T] = 1.0
    d_logits = (p - onehot) / float(N)
    grads: dict[str, Dual] = {"W_hq": _tokens_mm(top, d_logits), "b_q": d_logits.sum(axis=(0, 1))}
    d_out = d_logits @ Dual.exact(params["W_hq"]).T
    H = params["W_hq"].shape[0] // len(layers[0])
    for layer in reversed(range(len(layers))):
        d_in = None
        for d, direction in enumerate(layers[layer]):
            part = d_out[..., d * H : (d + 1) * H]
            part = part[::-1] if d else part
            g, dx = _direction_backward(cell, direction, part, gru_reset_after, layer > 0)
            grads.update({_prefix(layer, d) + k: v for k, v in g.items()})
            if dx is not None:
                dx = dx[::-1] if d else dx
                d_in = dx if d_in is None else d_in + dx
        if d_in is not None:  # None only for the first layer, below which nothing reads d_out
            d_out = d_in
    n_states = 2 if cell == "lstm" else 1
    final = tuple(stack([f[j] for f in finals]) for j in range(n_states))
    swap = lambda x: Dual(x.v.transpose(1, 0, 2), x.s.transpose(1, 0, 2))  # noqa: E731
    return Magnitudes(loss, {k: grads[k] for k in params}, swap(logits), final)


def _direction_backward(cell: str, direction: _Direction, d_out: Dual, after: bool,
                        need_dx: bool) -> tuple[dict[str, Dual], Dual | None]:  # fmt: skip
    """BPTT through one direction of one layer; ``d_out`` (T, B, H) in processing order."""
    w, steps, T = direction.w, direction.steps, len(direction.steps)
    H = d_out.v.shape[-1]
    grads = {"W_h" + g: _zero((H, H)) for g in _GATES[cell]}
    d_pres: dict[str, list[Dual]] = {g: [] for g in _GATES[cell]}  # in reverse time order
    dh_next = _zero(d_out.v.shape[1:])
    dc = _zero(d_out.v.shape[1:]) if cell == "lstm" else None
    for t in reversed(range(T)):
        d_pre, dh_next, dc = _cell_backward(cell, w, steps[t], d_out[t] + dh_next, dc, grads,
                                            after)  # fmt: skip
        for g in d_pre:
            d_pres[g].append(d_pre[g])
    dx = None
    for g in _GATES[cell]:
        dp = stack(d_pres[g][::-1])
        grads["b_" + g] = dp.sum(axis=(0, 1))
        if isinstance(direction.xin, np.ndarray):
            grads["W_x" + g] = _rows_grad(direction.xin, dp, w["W_x" + g].v.shape[0])
        else:
            grads["W_x" + g] = _tokens_mm(direction.xin, dp)
            if need_dx:
                part = dp @ w["W_x" + g].T
                dx = part if dx is None else dx + part
    return grads, dx


__all__ = ["Dual", "Magnitudes", "loss_and_grads"]
