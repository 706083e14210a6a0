"""The NumPy oracle: forward pass and hand-derived BPTT for the textbook's recurrent LMs.

This module is deliberately independent of ``cells.py`` (which every framework differentiates with
its own autodiff): here the gradients are written out by hand, and the tests check them against
central finite differences in float64. Arrays are batch-major at the boundary, time-major inside.

The model, for t = 1..T with one-hot inputs x_t (B, V) and sigma the logistic function:

    rnn   h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)
    gru   z = sigma(x W_xz + h W_hz + b_z),  r = sigma(x W_xr + h W_hr + b_r)
          c = tanh(x W_xh + (r * h) W_hh + b_h)       reset before the matmul (the book)
          c = tanh(x W_xh + b_h + r * (h W_hh))       reset after it (cuDNN and friends)
          h_t = z * h + (1 - z) * c
    lstm  i, f, o = sigma(x W_x. + h W_h. + b_.),  g = tanh(x W_xc + h W_hc + b_c)
          c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
    o_t = h_t W_hq + b_q;  L = mean over all B*T tokens of -log softmax(o_t)[y_t]

Deep models feed each layer's outputs (T, B, H) to the next; a bidirectional layer also runs
backwards in time and outputs both directions side by side (T, B, 2H). States are tuples of
(layers * directions, B, H) arrays, layer-major: ``(h,)``, or ``(h, c)`` for the LSTM.
"""

from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]


def _dtype(params: Params) -> np.dtype:
    return params["W_hq"].dtype


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, Y: np.ndarray) -> float:
    """Mean cross-entropy over every token; ``logits`` (..., V), ``Y`` int ids of shape (...)."""
    logp = log_softmax(logits)
    picked = np.take_along_axis(logp, Y[..., None], axis=-1)[..., 0]
    return float(-picked.mean())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form cannot overflow (1 / (1 + exp(-x)) warns for x < -709) and keeps the dtype.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _structure(params: Params) -> tuple[str, int, int, int]:
    """(cell, layers, directions, hidden size) read off the parameter names."""
    cell = "lstm" if "W_xi" in params else "gru" if "W_xz" in params else "rnn"
    layers = 1
    while f"l{layers}.W_x{_GATES[cell][0]}" in params:
        layers += 1
    directions = 2 if f"rev.W_x{_GATES[cell][0]}" in params else 1
    return cell, layers, directions, params["W_hq"].shape[0] // directions


# The book's gate letters per cell; the candidate (tanh) gate comes last.
_GATES = {"rnn": ("h",), "gru": ("z", "r", "h"), "lstm": ("i", "f", "o", "c")}


def _prefix(layer: int, direction: int) -> str:
    return (f"l{layer}." if layer else "") + ("rev." if direction else "")


def _project(W: np.ndarray, xin: np.ndarray) -> np.ndarray:
    """x W for all steps: a row gather for token ids (T, B), a matmul for floats (T, B, I)."""
    return W[xin] if xin.dtype.kind in "iu" else xin @ W


def _run_direction(cell, w, xin, carry, reset_after):
    """One direction of one layer over time-major input ``xin`` (in processing order).

    Returns the outputs (T, B, H), the final carry and what the backward pass needs.
    """
    T = xin.shape[0]
    xw = {g: _project(w["W_x" + g], xin) for g in _GATES[cell]}  # x W_xg, every step
    h, c = carry
    steps = []
    outs = []
    for t in range(T):
        if cell == "rnn":
            h_new = np.tanh(xw["h"][t] + h @ w["W_hh"] + w["b_h"])
            cache = {"h_prev": h, "h": h_new}
        elif cell == "gru":
            z = _sigmoid(xw["z"][t] + h @ w["W_hz"] + w["b_z"])
            r = _sigmoid(xw["r"][t] + h @ w["W_hr"] + w["b_r"])
            if reset_after:
                hh = h @ w["W_hh"]
                cand = np.tanh(xw["h"][t] + w["b_h"] + r * hh)
            else:
                hh = None
                cand = np.tanh(xw["h"][t] + (r * h) @ w["W_hh"] + w["b_h"])
            h_new = z * h + (1.0 - z) * cand
            cache = {"h_prev": h, "z": z, "r": r, "cand": cand, "hh": hh}
        else:
            i = _sigmoid(xw["i"][t] + h @ w["W_hi"] + w["b_i"])
            f = _sigmoid(xw["f"][t] + h @ w["W_hf"] + w["b_f"])
            o = _sigmoid(xw["o"][t] + h @ w["W_ho"] + w["b_o"])
            g = np.tanh(xw["c"][t] + h @ w["W_hc"] + w["b_c"])
            c_new = f * c + i * g
            tc = np.tanh(c_new)
            h_new = o * tc
            cache = {"h_prev": h, "c_prev": c, "i": i, "f": f, "o": o, "g": g, "tc": tc}
            c = c_new
        h = h_new
        steps.append(cache)
        outs.append(h)
    return np.stack(outs), (h, c), steps


def _backprop_direction(cell, w, xin, steps, d_out, reset_after, need_dx):
    """Hand-written BPTT through one direction: ``d_out`` (T, B, H) is d loss / d outputs in
    processing order. Returns the gradients of this direction's weights (unprefixed names) and
    d loss / d input (T, B, I) when ``need_dx``."""
    T = len(steps)
    grads = {k: np.zeros_like(v) for k, v in w.items()}
    d_pre = {g: np.zeros_like(d_out) for g in _GATES[cell]}  # d loss / d gate pre-activations
    dh_next = np.zeros_like(d_out[0])
    dc_next = np.zeros_like(d_out[0])
    for t in reversed(range(T)):
        s = steps[t]
        dh = d_out[t] + dh_next
        h_prev = s["h_prev"]
        if cell == "rnn":
            d_pre["h"][t] = dh * (1.0 - s["h"] ** 2)  # tanh' = 1 - tanh^2
            recurrent: tuple[str, ...] = ("h",)
            dh_prev = np.zeros_like(dh)
        elif cell == "gru":
            z, r, cand = s["z"], s["r"], s["cand"]
            dh_prev = dh * z
            dz = dh * (h_prev - cand)
            da = dh * (1.0 - z) * (1.0 - cand**2)
            d_pre["h"][t] = da
            if reset_after:
                d_hh = da * r  # through r * (h W_hh)
                dr = da * s["hh"]
                grads["W_hh"] += h_prev.T @ d_hh
                dh_prev = dh_prev + d_hh @ w["W_hh"].T
            else:
                d_rh = da @ w["W_hh"].T  # through (r * h) W_hh
                grads["W_hh"] += (r * h_prev).T @ da
                dr = d_rh * h_prev
                dh_prev = dh_prev + d_rh * r
            d_pre["z"][t] = dz * z * (1.0 - z)
            d_pre["r"][t] = dr * r * (1.0 - r)
            recurrent = ("z", "r")  # the candidate's recurrent path is done above
        else:
            i, f, o, g_, tc = s["i"], s["f"], s["o"], s["g"], s["tc"]
            do = dh * tc
            dc = dc_next + dh * o * (1.0 - tc**2)
            d_pre["i"][t] = dc * g_ * i * (1.0 - i)
            d_pre["f"][t] = dc * s["c_prev"] * f * (1.0 - f)
            d_pre["o"][t] = do * o * (1.0 - o)
            d_pre["c"][t] = dc * i * (1.0 - g_**2)
            dc_next = dc * f
            recurrent = _GATES[cell]
            dh_prev = np.zeros_like(dh)
        for g in recurrent:  # pre_g = ... + h_prev W_hg
            grads["W_h" + g] += h_prev.T @ d_pre[g][t]
            dh_prev = dh_prev + d_pre[g][t] @ w["W_h" + g].T
        dh_next = dh_prev
    dx = None
    for g in _GATES[cell]:
        grads["b_" + g] = d_pre[g].sum(axis=(0, 1))
        if xin.dtype.kind in "iu":
            np.add.at(grads["W_x" + g], xin, d_pre[g])  # one-hot rows pick the rows to update
        else:
            grads["W_x" + g] = np.einsum("tbi,tbh->ih", xin, d_pre[g])
            if need_dx:
                part = d_pre[g] @ w["W_x" + g].T
                dx = part if dx is None else dx + part
    return grads, dx


def _initial_state(params: Params, state, B: int) -> tuple[np.ndarray, ...]:
    cell, L, D, H = _structure(params)
    n = 2 if cell == "lstm" else 1
    dtype = _dtype(params)
    if state is None:
        return tuple(np.zeros((L * D, B, H), dtype=dtype) for _ in range(n))
    if isinstance(state, np.ndarray):
        state = (state,)
    if len(state) != n:
        raise ValueError(f"a {cell} state is a tuple of {n} arrays, got {len(state)}")
    out = tuple(np.asarray(s, dtype=dtype).reshape(L * D, B, H) for s in state)
    return out


def model_forward(
    params: Params, X: np.ndarray, state=None, *, gru_reset_after: bool = True
) -> tuple[np.ndarray, tuple[np.ndarray, ...], dict]:
    """Run any model of this package (cell, depth and directions read off the names).

    Arguments:
        X: int ids (B, T).
        state: ``None`` (zeros) or a tuple of (layers * directions, B, H) arrays.
    Returns:
        logits (B, T, V), the final state (same layout as ``state``), and a cache for BPTT.
    """
    cell, L, D, H = _structure(params)
    state = _initial_state(params, state, X.shape[0])
    xin = np.ascontiguousarray(X.T)  # (T, B) ids for layer 0
    layers = []
    finals: list[tuple[np.ndarray, np.ndarray]] = []
    for layer in range(L):
        outs, dirs = [], []
        for d in range(D):
            pre = _prefix(layer, d)
            w = {k[len(pre) :]: v for k, v in params.items() if _owner(k) == pre}
            k = layer * D + d
            carry = (state[0][k], state[1][k] if cell == "lstm" else None)
            seq = xin[::-1] if d else xin  # the backward direction reads time reversed
            hs, last, steps = _run_direction(cell, w, seq, carry, gru_reset_after)
            outs.append(hs[::-1] if d else hs)
            dirs.append((w, seq, steps))
            finals.append(last)
        layers.append((xin, dirs))
        xin = np.concatenate(outs, axis=-1) if D == 2 else outs[0]
    logits = xin @ params["W_hq"] + params["b_q"]  # (T, B, V)
    final = tuple(
        np.stack([f[j] for f in finals]) for j in range(2 if cell == "lstm" else 1)
    )
    cache = {"layers": layers, "top": xin, "cell": cell, "H": H, "D": D}
    return logits.transpose(1, 0, 2), final, cache


def _owner(name: str) -> str:
    """The layer/direction prefix of a recurrent parameter (``"W_hq"``/``"b_q"``: none)."""
    return name[: name.rfind(".") + 1] if name not in ("W_hq", "b_q") else "out"


def model_loss_and_grads(
    params: Params, X: np.ndarray, Y: np.ndarray, state=None, *, gru_reset_after: bool = True
) -> tuple[float, Params, tuple[np.ndarray, ...]]:
    """Mean cross-entropy and its gradient for every parameter, by hand-written BPTT.

    The initial state is a constant (it was detached by the caller).
    Returns (loss, grads with the names and shapes of ``params``, final state).
    """
    logits, final, cache = model_forward(params, X, state, gru_reset_after=gru_reset_after)
    B, T = X.shape
    loss = cross_entropy(logits, Y)
    # d loss / d logits = (softmax - onehot) / (B*T), laid out time-major (T, B, V).
    d_logits = np.exp(log_softmax(logits)).transpose(1, 0, 2).copy()
    rows_t, rows_b = np.meshgrid(np.arange(T), np.arange(B), indexing="ij")
    d_logits[rows_t, rows_b, Y.T] -= 1.0
    d_logits /= B * T
    grads: Params = {
        "W_hq": np.einsum("tbh,tbv->hv", cache["top"], d_logits),
        "b_q": d_logits.sum(axis=(0, 1)),
    }
    d_out = d_logits @ params["W_hq"].T  # (T, B, H * D): into the top layer's outputs
    H, cell = cache["H"], cache["cell"]
    for layer in reversed(range(len(cache["layers"]))):
        _, dirs = cache["layers"][layer]
        d_in = None
        for d, (w, seq, steps) in enumerate(dirs):
            part = d_out[..., d * H : (d + 1) * H]
            part = part[::-1] if d else part  # processing order
            g, dx = _backprop_direction(cell, w, seq, steps, part, gru_reset_after, layer > 0)
            grads.update({_prefix(layer, d) + k: v for k, v in g.items()})
            if dx is not None:
                dx = dx[::-1] if d else dx
                d_in = dx if d_in is None else d_in + dx
        d_out = d_in
    return loss, {k: grads[k].astype(v.dtype, copy=False) for k, v in params.items()}, final


def model_train_step(
    params: Params,
    X: np.ndarray,
    Y: np.ndarray,
    state,
    lr: float,
    max_norm: float,
    *,
    gru_reset_after: bool = True,
) -> tuple[Params, float, float, tuple[np.ndarray, ...]]:
    """One SGD step with global-norm clipping: (new params, loss, norm before clipping, state)."""
    loss, grads, final = model_loss_and_grads(
        params, X, Y, state, gru_reset_after=gru_reset_after
    )
    clipped, norm = clip_grads(grads, max_norm)
    return sgd(params, clipped, lr), loss, norm, final


# --- optimizers and schedules, written here independently of optim.py -------------------------
# Plain formulas, one parameter at a time, applied to gradients already clipped by clip_grads.
# The state is {"step": updates done, slot: {name: array}} with the slots "buf" (momentum,
# nesterov) or "m" and "v" (adam, adamw); the slot names are the checkpoint's.

OPTIMIZER_SLOTS = {"sgd": (), "momentum": ("buf",), "nesterov": ("buf",), "adam": ("m", "v"),
                   "adamw": ("m", "v")}  # fmt: skip


def optimizer_state(params: Params, kind: str) -> dict:
    """The state of optimizer ``kind`` before its first update: zero slots, step 0."""
    state: dict = {"step": 0}
    for slot in OPTIMIZER_SLOTS[kind]:
        state[slot] = {k: np.zeros_like(p) for k, p in params.items()}
    return state


def optimizer_update(
    params: Params,
    grads: Params,
    state: dict,
    kind: str,
    lr: float,
    *,
    momentum: float = 0.9,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[Params, dict]:
    """One update of optimizer ``kind`` with the (clipped) ``grads``; returns (params, state).

    sgd       p - lr g
    momentum  b = mu b + g;  p - lr b
    nesterov  b = mu b + g;  p - lr (g + mu b)
    adam      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  t = step + 1
              m_hat = m / (1 - b1^t);  v_hat = v / (1 - b2^t);  p - lr m_hat / (sqrt(v_hat) + eps)
    adamw     p - lr wd p first (decoupled weight decay), then adam
    """
    t = state["step"] + 1
    new_state: dict = {"step": t}
    new: Params = {}
    for name, p in params.items():
        g = grads[name]
        if kind == "sgd":
            p = p - lr * g
        elif kind in ("momentum", "nesterov"):
            b = momentum * state["buf"][name] + g
            new_state.setdefault("buf", {})[name] = b
            p = p - lr * (g + momentum * b) if kind == "nesterov" else p - lr * b
        elif kind in ("adam", "adamw"):
            if kind == "adamw":
                p = p - lr * weight_decay * p
            m = beta1 * state["m"][name] + (1 - beta1) * g
            v = beta2 * state["v"][name] + (1 - beta2) * g**2
            new_state.setdefault("m", {})[name] = m
            new_state.setdefault("v", {})[name] = v
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        else:
            raise ValueError(f"unknown optimizer {kind!r}")
        new[name] = p.astype(params[name].dtype)
    return new, new_state


def schedule_lr(
    kind: str,
    lr: float,
    step: int,
    *,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    decay_steps: int | None = None,
    decay_rate: float = 0.1,
) -> float:
    """The learning rate of update ``step`` (0-based): linear warmup to ``lr`` over
    ``warmup_steps`` updates, then constant, step (times ``decay_rate`` every ``decay_steps``, by
    default a third of the updates after the warmup) or cosine (to 0 over the updates after the
    warmup)."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    done = step - warmup_steps
    if kind == "constant":
        return lr
    left = max(1, (total_steps or 0) - warmup_steps)  # updates after the warmup
    if kind == "step":
        every = decay_steps if decay_steps else max(1, left // 3)
        return lr * decay_rate ** (done // every)
    if kind == "cosine":
        return float(lr * (1 + np.cos(np.pi * min(done, left) / left)) / 2)
    raise ValueError(f"unknown schedule {kind!r}")


def model_optimizer_step(
    params: Params,
    X: np.ndarray,
    Y: np.ndarray,
    state,
    lr: float,
    max_norm: float,
    opt_state: dict,
    kind: str,
    *,
    gru_reset_after: bool = True,
    **hyper: float,
) -> tuple[Params, float, float, tuple[np.ndarray, ...], dict]:
    """One step of optimizer ``kind`` after global-norm clipping: (new params, loss, norm before
    clipping, final state, new optimizer state); ``hyper`` as :func:`optimizer_update`."""
    loss, grads, final = model_loss_and_grads(
        params, X, Y, state, gru_reset_after=gru_reset_after
    )
    clipped, norm = clip_grads(grads, max_norm)
    new, new_opt = optimizer_update(params, clipped, opt_state, kind, lr, **hyper)
    return new, loss, norm, final, new_opt


# --- the single-layer tanh RNN (or GRU) with a bare (B, H) state, as the book writes it ----------


def _single_h(params: Params) -> None:
    cell, L, D, _ = _structure(params)
    if cell == "lstm" or L * D != 1:
        raise ValueError(
            f"this function takes a bare (B, H) state, which only a one-layer one-direction "
            f"rnn or gru has (got {cell}, {L} layer(s), {D} direction(s)); use model_forward"
        )


def _wrap(h0: np.ndarray | None):
    return None if h0 is None else (np.asarray(h0)[None],)


def forward(
    params: Params, X: np.ndarray, h0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a one-layer RNN over ids ``X`` (B, T) from state ``h0`` (B, H).

    Returns:
        logits (B, T, V), the final state (B, H), and every state (T + 1, B, H) with h_0 first.
    """
    _single_h(params)
    logits, final, cache = model_forward(params, X, _wrap(h0))
    _, dirs = cache["layers"][0]
    steps = dirs[0][2]
    hs = np.stack([steps[0]["h_prev"], *(cache["top"])]) if steps else final[0]
    return logits, final[0][0], hs


def loss_and_grads(
    params: Params, X: np.ndarray, Y: np.ndarray, h0: np.ndarray | None = None
) -> tuple[float, Params, np.ndarray]:
    """:func:`model_loss_and_grads` for a one-layer RNN with a bare (B, H) state ``h0``.

    Returns (loss, grads, final state (B, H))."""
    _single_h(params)
    loss, grads, final = model_loss_and_grads(params, X, Y, _wrap(h0))
    return loss, grads, final[0][0]


def grad_norm(grads: Params) -> float:
    """Global L2 norm over every gradient tensor."""
    return float(
        np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    )


def clip_grads(grads: Params, max_norm: float) -> tuple[Params, float]:
    """Scale all gradients by ``min(1, max_norm / norm)``; ``max_norm`` 0 disables clipping."""
    norm = grad_norm(grads)
    if max_norm <= 0 or norm <= max_norm:
        return dict(grads), norm
    scale = max_norm / norm
    return {k: (g * scale).astype(g.dtype) for k, g in grads.items()}, norm


def sgd(params: Params, grads: Params, lr: float) -> Params:
    return {k: (p - lr * grads[k]).astype(p.dtype) for k, p in params.items()}


def train_step(
    params: Params,
    X: np.ndarray,
    Y: np.ndarray,
    h0: np.ndarray | None,
    lr: float,
    max_norm: float,
) -> tuple[Params, float, float, np.ndarray]:
    """:func:`model_train_step` for a one-layer RNN with a bare (B, H) state.

    Returns (new params, loss, grad norm before clipping, final state (B, H))."""
    _single_h(params)
    new, loss, norm, final = model_train_step(params, X, Y, _wrap(h0), lr, max_norm)
    return new, loss, norm, final[0][0]


def concat_trick(
    X: np.ndarray, W_xh: np.ndarray, H: np.ndarray, W_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of X W_xh + H W_hh == [X, H] [W_xh; W_hh]."""
    left = X @ W_xh + H @ W_hh
    right = np.concatenate([X, H], axis=1) @ np.concatenate([W_xh, W_hh], axis=0)
    return left, right
