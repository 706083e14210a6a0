"""The fast path: a hand-written training step for the plain tanh RNN, over a small ``ops``
namespace.

The generic step (``cells.py`` differentiated by each framework's autodiff) records every small
op of the time loop on a tape and replays its adjoint. At the textbook's size (H=32) the cost of a
step is the number of ops, not their FLOPs, so this module writes the forward pass *and* the
backward pass out by hand with as few ops per time step as the math allows:

* forward, per step: ``h_t = tanh(xw_t + h_{t-1} W_hh)``: one multiply-add (``addmm``) and one tanh,
  where ``xw = (W_xh + b_h)[X]`` is a row gather for every step at once (hoisted out of the loop);
* the output projection, softmax cross-entropy and its gradient ``(softmax - onehot) / N`` once,
  on all ``N = B * T`` tokens;
* backward, per step: ``dz_t = a_t * (1 - h_t^2)`` and ``a_{t-1} = dH_{t-1} + dz_t W_hh^T``:
  one multiply and one multiply-add; ``1 - h^2`` for all steps at once before the loop;
* the weight gradients after the loop as three batched reductions over all tokens
  (``dW_hh = H_prev^T dZ``, ``db_h = sum dZ``, ``dW_xh`` a scatter-add of dZ's rows by token);
* clipping and the optimizer's update: :func:`optim.update`, which the generic step ends in too.

This is the math of ``reference.loss_and_grads`` rearranged, and it is checked against that oracle
by the shared suite (every ``train_step`` of the ``fast`` variant runs here) and by
``tests/test_fastpath.py``. It covers one layer of the ``rnn`` cell only: anything else raises
:class:`NotImplementedError` before any op runs, and ``Backend._step`` runs the generic (autodiff)
step instead, as Keras falls back from cuDNN (or refuses, for a backend made with ``strict=True``).

Each adapter supplies :class:`FastOps` (its ``cells.Ops`` plus the few functions below, in its
``<framework>_ops.py``); the base backend runs :func:`loss_and_grads` and the update inside the
framework's compiler where it has one (``jax.jit``, ``tf.function``) and eagerly with no autodiff
tape elsewhere (PyTorch, MXNet).
"""

from __future__ import annotations

from typing import Any

from . import cells

Array = Any

RNN_PARAMS = frozenset(("W_xh", "W_hh", "b_h", "W_hq", "b_q"))


def check_applies(params: dict[str, Any]) -> None:
    """Raise :class:`NotImplementedError` unless ``params`` are one layer of the tanh RNN."""
    extra, missing = sorted(set(params) - RNN_PARAMS), sorted(RNN_PARAMS - set(params))
    if extra or missing:
        names = extra or missing
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise NotImplementedError(
            "the fast step covers the one-layer tanh RNN only (W_xh, W_hh, b_h, W_hq, b_q), not "
            f"a model {'with' if extra else 'without'} {shown}"
        )


class FastOps(cells.Ops):
    """What the fast step needs beyond :class:`cells.Ops`; defaults that any framework can use.

    Shapes: N tokens, T time, B batch, H hidden, V vocabulary.
    """

    def addmm(self, c: Array, a: Array, b: Array) -> Array:
        """``c + a @ b``."""
        return c + self.matmul(a, b)

    def transpose(self, w: Array) -> Array:
        """A 2-D transpose."""
        raise NotImplementedError

    def reshape(self, x: Array, shape: tuple[int, ...]) -> Array:
        return x.reshape(shape)

    def exp(self, x: Array) -> Array:
        raise NotImplementedError

    def sum_rows(self, x: Array) -> Array:
        """Sum over axis 0: (N, K) -> (K,)."""
        raise NotImplementedError

    def mm_tn(self, a: Array, b: Array) -> Array:
        """``a^T @ b`` for 2-D a (N, K), b (N, M): a reduction over the N rows."""
        return self.matmul(self.transpose(a), b)

    def scatter_rows(self, ids: Array, rows: Array, n: int) -> Array:
        """(n, K) with ``out[i] = sum of rows[j] where ids[j] == i``; ids (N,), rows (N, K)."""
        return self.mm_tn(self.one_hot(ids, n), rows)

    def output_head(
        self, hf: Array, W_hq: Array, b_q: Array, Yf: Array
    ) -> tuple[Array, Array, Array, Array]:
        """The output layer and the loss on all N tokens at once, forward and backward.

        Logits are ``hf W_hq + b_q`` (N, V) for the states hf (N, H); the loss is their mean
        cross-entropy with ids Yf (N,); the logits' gradient is ``(softmax - onehot) / N``.

        Returns:
            (loss, dW_hq (H, V), db_q (V,), dH (N, H): the gradient of the states hf).
        """
        N, V = hf.shape[0], W_hq.shape[1]
        logits = self.addmm(b_q, hf, W_hq)
        lse = self.logsumexp(logits)  # (N, 1)
        loss = self.mean(self.reshape(lse, (N,)) - self.pick(logits, Yf))
        d_logits = (self.exp(logits - lse) - self.one_hot(Yf, V)) * (1.0 / N)
        dW_hq, db_q = self.mm_tn(hf, d_logits), self.sum_rows(d_logits)
        return loss, dW_hq, db_q, self.matmul(d_logits, self.transpose(W_hq))

    def output_loss(self, hf: Array, W_hq: Array, b_q: Array, Yf: Array) -> Array:
        """The mean cross-entropy of :meth:`output_head` alone (no gradient)."""
        N = hf.shape[0]
        logits = self.addmm(b_q, hf, W_hq)
        return self.mean(self.reshape(self.logsumexp(logits), (N,)) - self.pick(logits, Yf))

    def tanh_grad(self, hs: Array) -> Array:
        """``1 - h^2``: tanh's derivative from its output."""
        return 1.0 - hs * hs

    # The two time loops. A Python loop by default (unrolled once per length under a tracer);
    # adapters with a compiled loop construct override them.

    def forward_loop(self, xw: Array, h0: Array, W_hh: Array) -> Array:
        """Every state ``h_t = tanh(xw_t + h_{t-1} W_hh)``, (T, B, H), from xw (T, B, H)."""
        h, hs = h0, []
        for t in range(xw.shape[0]):
            h = self.tanh(self.addmm(xw[t], h, W_hh))
            hs.append(h)
        return self.stack(hs)

    def backward_loop(self, dH: Array, G: Array, W_hh: Array) -> Array:
        """Pre-activation gradients dZ (T, B, H) from the output gradient dH (T, B, H) and the
        tanh derivative ``G = 1 - h^2`` (T, B, H)."""
        W_hh_T = self.transpose(W_hh)
        T = dH.shape[0]
        dzs: list[Array] = [None] * T
        a = dH[T - 1]  # dL/dh_T: nothing flows in from later steps
        for t in range(T - 1, -1, -1):
            dzs[t] = a * G[t]
            if t:
                a = self.addmm(dH[t - 1], dzs[t], W_hh_T)
        return self.stack(dzs)


def loss_and_grads(
    ops: FastOps, params: dict[str, Array], X: Array, Y: Array, h0: Array
) -> tuple[Array, dict[str, Array], Array]:
    """Mean cross-entropy, the gradient of every parameter, and the final state.

    Arguments:
        params: ``W_xh (V, H), W_hh (H, H), b_h (H,), W_hq (H, V), b_q (V,)``, native arrays.
        X, Y: int ids (B, T); h0: the initial state (B, H), a constant.

    Returns:
        (loss scalar, grads keyed like ``params``, h_T (B, H)).
    """
    check_applies(params)
    W_xh, W_hh, b_h, W_hq, b_q = (params[k] for k in ("W_xh", "W_hh", "b_h", "W_hq", "b_q"))
    V, H = W_xh.shape
    B, T = X.shape
    N = B * T
    Xf = ops.reshape(ops.swap_bt(X), (N,))  # time-major token order, flattened
    Yf = ops.reshape(ops.swap_bt(Y), (N,))

    # W_xh[x] + b_h for every token as rows of the biased table W_xh + b_h: the same sums
    # (bit for bit), added once per vocabulary row (V x H) instead of once per token (N x H).
    xw = ops.reshape(ops.take_rows(W_xh + b_h, Xf), (T, B, H))
    hs = ops.forward_loop(xw, h0, W_hh)  # (T, B, H)
    hf = ops.reshape(hs, (N, H))

    loss, dW_hq, db_q, dH = ops.output_head(hf, W_hq, b_q, Yf)
    dZ = ops.backward_loop(ops.reshape(dH, (T, B, H)), ops.tanh_grad(hs), W_hh)
    dzf = ops.reshape(dZ, (N, H))
    grads = {
        "W_xh": ops.scatter_rows(Xf, dzf, V),
        # sum_t h_{t-1}^T dz_t, with h_0 apart so that no shifted copy of every state is made
        "W_hh": ops.mm_tn(h0, dZ[0]) + ops.mm_tn(ops.reshape(hs[:-1], (N - B, H)), dzf[B:]),
        "b_h": ops.sum_rows(dzf),
        "W_hq": dW_hq,
        "b_q": db_q,
    }
    return loss, grads, hs[T - 1]


def loss(
    ops: FastOps, params: dict[str, Array], X: Array, Y: Array, h0: Array
) -> tuple[Array, Array]:
    """The mean cross-entropy and the final state (B, H) by the fast step's forward pass alone,
    for evaluation (no gradient may be taken through it: its loops may overwrite their inputs).
    Arguments as :func:`loss_and_grads`."""
    check_applies(params)
    W_xh, W_hh, b_h, W_hq, b_q = (params[k] for k in ("W_xh", "W_hh", "b_h", "W_hq", "b_q"))
    H = W_xh.shape[1]
    B, T = X.shape
    Xf = ops.reshape(ops.swap_bt(X), (B * T,))
    Yf = ops.reshape(ops.swap_bt(Y), (B * T,))
    hs = ops.forward_loop(ops.reshape(ops.take_rows(W_xh + b_h, Xf), (T, B, H)), h0, W_hh)
    return ops.output_loss(ops.reshape(hs, (B * T, H)), W_hq, b_q, Yf), hs[T - 1]

