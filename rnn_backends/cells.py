"""The model's equations, written once over a small ``ops`` namespace.

Each framework adapter supplies an :class:`Ops` (its array functions) and a ``scan`` (its time
loop), and differentiates these functions with its own autodiff. The NumPy oracle in
``reference.py`` does *not* use this module: it is the independent check.

Cells (``sigma`` the logistic function; every gate g has ``W_xg``, ``W_hg``, ``b_g``):

* ``rnn``: h = tanh(x W_xh + h W_hh + b_h).
* ``gru``: z, r = sigma(x W_x. + h W_h. + b_.); candidate c = tanh(x W_xh + (r * h) W_hh + b_h)
  with the reset gate before the matmul (the book's scratch GRU), or
  c = tanh(x W_xh + b_h + r * (h W_hh)) after it (cuDNN, PyTorch, MXNet, Flax, Keras's default);
  h = z * h + (1 - z) * c.
* ``lstm``: i, f, o = sigma(...), g = tanh(x W_xc + h W_hc + b_c); c = f * c + i * g,
  h = o * tanh(c).

Layers stack (layer k > 0 reads layer k - 1's outputs) and a bidirectional layer runs a second
set of weights over the reversed sequence, its outputs flipped back and put beside the forward
ones (2H). Parameter names are ``params.param_shapes``'s.

Variants (identical numbers, different cost); every cell supports all three:

* ``textbook``: one-hot inputs times ``W_xg`` at every step, one matmul per gate, as the book.
* ``concat``: the concatenation trick, ``[x_t, h] [W_xg; W_hg]`` per gate. The reset-after GRU
  candidate cannot take it (r multiplies ``h W_hh`` alone), so it keeps two matmuls there.
* ``fast``: the input projections of all gates for all steps at once, hoisted out of the loop (a
  row gather of the stacked ``W_x`` for token ids, one matmul for deeper layers); the recurrent
  matmuls of the gates joined into one per step; the output projection batched after the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .config import CELL_SPECS, ModelConfig
from .params import layer_prefix

CELL_VARIANTS = ("textbook", "concat", "fast")

Array = Any
Scan = Callable[[Callable[[Any, Array], tuple[Any, Array]], Any, Array], tuple[Any, Array]]


class Ops:
    """The array functions the shared math needs; every adapter implements all of them.

    Shapes use B batch, T time, V vocabulary, H hidden. Arrays also support ``+``, ``-``, ``*``
    and ``/`` with arrays and Python floats, and basic slicing of the last axis (``x[..., a:b]``).

    Arguments:
        dtype: the framework's float dtype, which ``one_hot`` (and any array made from nothing)
            takes.
    """

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype

    def matmul(self, a: Array, b: Array) -> Array: ...
    def tanh(self, x: Array) -> Array: ...
    def sigmoid(self, x: Array) -> Array: ...
    def take_rows(self, w: Array, ids: Array) -> Array:
        """``w[ids]`` for an int array ``ids`` of any shape."""

    def one_hot(self, ids: Array, depth: int) -> Array:
        """Float one-hot of ``ids`` in the backend's dtype."""

    def concat(self, xs: list[Array], axis: int) -> Array: ...
    def stack(self, xs: list[Array]) -> Array:
        """Stack along a new first axis."""

    def flip(self, x: Array) -> Array:
        """Reverse the first (time) axis; works on int ids too."""

    def swap_bt(self, x: Array) -> Array:
        """Swap the first two axes (batch-major <-> time-major)."""

    def logsumexp(self, x: Array) -> Array:
        """Over the last axis, keeping it."""

    def pick(self, x: Array, ids: Array) -> Array:
        """``x[..., ids]`` elementwise: x (..., V), ids (...) -> (...)."""

    def mean(self, x: Array) -> Array: ...
    def sum(self, x: Array) -> Array: ...
    def sqrt(self, x: Array) -> Array: ...
    def minimum(self, x: Array, y: float) -> Array: ...

    def cross_entropy(self, logits: Array, Y: Array) -> Array:
        """Mean softmax cross-entropy of logits (B, T, V) for ids Y (B, T), written with the
        functions above; an adapter whose framework has a fused loss (and a fused gradient for
        it) may use that instead."""
        logp = logits - self.logsumexp(logits)
        return -self.mean(self.pick(logp, Y))


def check_variant(variant: str) -> None:
    if variant not in CELL_VARIANTS:
        raise ValueError(f"unknown cell variant {variant!r}; expected one of {CELL_VARIANTS}")


class _Gates:
    """Gate pre-activations of one layer direction, computed the way ``variant`` says."""

    def __init__(self, ops: Ops, w: dict[str, Array], gates: Sequence[str], variant: str):
        self.ops, self.w, self.variant = ops, w, variant
        self.index = {g: k for k, g in enumerate(gates)}
        self.H = w["W_h" + gates[0]].shape[0]
        self._joined: dict[tuple[str, ...], Array] = {}
        if variant == "concat":
            self.cat = {g: ops.concat([w["W_x" + g], w["W_h" + g]], axis=0) for g in gates}

    def inputs(self, xin: Array, is_ids: bool, gates: Sequence[str]) -> Array:
        """What the scan runs over: (T, B, G*H) projections (fast) or the inputs themselves."""
        ops, w = self.ops, self.w
        if self.variant != "fast":
            return ops.one_hot(xin, w["W_x" + gates[0]].shape[0]) if is_ids else xin
        W = _cat(ops, [w["W_x" + g] for g in gates], axis=1)
        b = _cat(ops, [w["b_" + g] for g in gates], axis=0)
        return (ops.take_rows(W, xin) if is_ids else ops.matmul(xin, W)) + b

    def _xslice(self, x: Array, g: str) -> Array:
        if len(self.index) == 1:
            return x
        k = self.index[g]
        return x[..., k * self.H : (k + 1) * self.H]

    def _hmul(self, h: Array, gates: tuple[str, ...]) -> list[Array]:
        """[h W_hg for g in gates], one matmul in the fast variant."""
        ops, w = self.ops, self.w
        if self.variant != "fast" or len(gates) == 1:
            return [ops.matmul(h, w["W_h" + g]) for g in gates]
        if gates not in self._joined:
            self._joined[gates] = ops.concat([w["W_h" + g] for g in gates], axis=1)
        hw = ops.matmul(h, self._joined[gates])
        return [hw[..., k * self.H : (k + 1) * self.H] for k in range(len(gates))]

    def pre(self, x: Array, h: Array, gates: tuple[str, ...]) -> list[Array]:
        """x W_xg + h W_hg + b_g for each g in ``gates``."""
        ops, w = self.ops, self.w
        if self.variant == "concat":
            xh = ops.concat([x, h], axis=-1)
            return [ops.matmul(xh, self.cat[g]) + w["b_" + g] for g in gates]
        hw = self._hmul(h, gates)
        return [self.xpart(x, g) + hw_g for g, hw_g in zip(gates, hw, strict=True)]

    def xpart(self, x: Array, g: str) -> Array:
        """x W_xg + b_g alone."""
        if self.variant == "fast":
            return self._xslice(x, g)
        return self.ops.matmul(x, self.w["W_x" + g]) + self.w["b_" + g]


def _cat(ops: Ops, xs: list[Array], axis: int) -> Array:
    return xs[0] if len(xs) == 1 else ops.concat(xs, axis=axis)


def cell_step(
    ops: Ops, cell: str, gates: _Gates, carry: tuple[Array, ...], x: Array, reset_after: bool
) -> tuple[Array, ...]:
    """One time step of ``cell``: the new carry, ``(h,)`` or ``(h, c)``."""
    h = carry[0]
    if cell == "rnn":
        (a,) = gates.pre(x, h, ("h",))
        return (ops.tanh(a),)
    if cell == "gru":
        az, ar = gates.pre(x, h, ("z", "r"))
        z, r = ops.sigmoid(az), ops.sigmoid(ar)
        if reset_after:
            cand = ops.tanh(gates.xpart(x, "h") + r * ops.matmul(h, gates.w["W_hh"]))
        else:
            (a,) = gates.pre(x, r * h, ("h",))
            cand = ops.tanh(a)
        return (z * h + (1.0 - z) * cand,)
    ai, af, ao, ac = gates.pre(x, h, ("i", "f", "o", "c"))
    c = ops.sigmoid(af) * carry[1] + ops.sigmoid(ai) * ops.tanh(ac)
    return (ops.sigmoid(ao) * ops.tanh(c), c)


def model_logits(
    ops: Ops,
    scan: Scan,
    params: dict[str, Array],
    X: Array,
    carry: tuple[Array, ...],
    model: ModelConfig,
    variant: str = "fast",
) -> tuple[Array, tuple[Array, ...]]:
    """Logits (B, T, V) and the final carry for int ids ``X`` (B, T).

    ``carry`` is flat: for each state tensor of the cell (``h``, then ``c`` for the LSTM), one
    (B, H) array per layer and direction, layer-major: ``carry[s * L * D + layer * D + d]``.
    The final carry has the same layout.
    """
    check_variant(variant)
    cell, L, D = model.cell, model.num_layers, model.num_directions
    gate_names = CELL_SPECS[cell].gates
    n_states = len(CELL_SPECS[cell].states)
    xin: Array = ops.swap_bt(X)  # (T, B): the loop runs over time
    finals: list[tuple[Array, ...]] = []
    for layer in range(L):
        outs = []
        for d in range(D):
            pre = layer_prefix(layer, d)
            w = {k[len(pre) :]: v for k, v in params.items() if _owner(k) == pre}
            gates = _Gates(ops, w, gate_names, variant)
            xs = gates.inputs(xin, layer == 0, gate_names)
            if d:
                xs = ops.flip(xs)  # the backward direction reads the sequence reversed
            k = layer * D + d
            start = tuple(carry[s * L * D + k] for s in range(n_states))

            def step(c, x, gates=gates):
                new = cell_step(ops, cell, gates, c, x, model.gru_reset_after)
                return new, new[0]

            last, hs = scan(step, start, xs)
            outs.append(ops.flip(hs) if d else hs)
            finals.append(tuple(last))
        xin = outs[0] if D == 1 else ops.concat(outs, axis=-1)
    final = tuple(finals[k][s] for s in range(n_states) for k in range(L * D))
    return ops.swap_bt(output_logits(ops, params, xin)), final


def _owner(name: str) -> str:
    """A recurrent parameter's layer/direction prefix (see ``params.layer_prefix``)."""
    return "out" if name in ("W_hq", "b_q") else name[: name.rfind(".") + 1]


def output_logits(ops: Ops, params: dict[str, Array], hs: Array) -> Array:
    """o_t = h_t W_hq + b_q for all steps at once."""
    return ops.matmul(hs, params["W_hq"]) + params["b_q"]


def cross_entropy(ops: Ops, logits: Array, Y: Array) -> Array:
    """Mean softmax cross-entropy over every token (:meth:`Ops.cross_entropy`)."""
    return ops.cross_entropy(logits, Y)


def concat_trick(ops: Ops, X: Array, W_xh: Array, H: Array, W_hh: Array) -> tuple[Array, Array]:
    """Both sides of X W_xh + H W_hh == [X, H] [W_xh; W_hh]."""
    left = ops.matmul(X, W_xh) + ops.matmul(H, W_hh)
    right = ops.matmul(ops.concat([X, H], axis=1), ops.concat([W_xh, W_hh], axis=0))
    return left, right
