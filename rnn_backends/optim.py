"""Optimizers and learning-rate schedules, written once over the shared ops.

Every backend's training step, the generic (autodiff) step and the hand-written fast step alike,
ends in :func:`update`: global-norm clipping of the raw gradients, then one optimizer update. The
NumPy oracle has its own, independent version in ``reference.py``; the shared suite holds every
framework to it.

With ``g`` the clipped gradient, ``lr`` this step's learning rate and ``t = 1, 2, ...`` the
update's number:

* ``sgd``: ``p <- p - lr g`` (the book's);
* ``momentum`` (heavy ball, PyTorch's ``SGD(momentum=mu)``): ``b <- mu b + g``, ``p <- p - lr b``;
* ``nesterov``: ``b <- mu b + g``, ``p <- p - lr (g + mu b)``;
* ``adam``: ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
  ``p <- p - lr (m / c1) / (sqrt(v / c2) + eps)`` with the bias corrections ``c1 = 1 - b1^t``,
  ``c2 = 1 - b2^t``;
* ``adamw``: Adam after the decoupled weight decay ``p <- p (1 - lr wd)`` (Loshchilov & Hutter, as
  PyTorch's ``AdamW``: the decay follows the scheduled learning rate and never enters m or v).

Clipping scales the gradients by ``min(1, max_norm / ||g||)`` before any of these (``max_norm``
is ``inf`` for no clipping, so there is no branch on it).

What a compiled step may depend on is split in two. The optimizer's kind and hyper-parameters
(:class:`Optimizer`, frozen and hashable) are *static*: one compiled step per optimizer. What
changes from step to step, the learning rate and the bias corrections (:class:`Rates`, computed
in Python by :func:`step_rates` from the update's number), is *traced*: passed in as scalars, so
JAX and TensorFlow compile one step for every learning rate and every step count.

Schedules (:class:`Schedule`) give the learning rate of each update, in plain Python: a linear
warmup from ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps`` updates, then
``constant``, ``step`` (times ``decay_rate`` every ``decay_steps`` updates) or ``cosine`` (half a
cosine from ``lr`` down to 0 over the updates after the warmup).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import ConfigError

if TYPE_CHECKING:
    from .cells import Ops

Array = Any
Slots = dict[str, dict[str, Array]]
"""An optimizer's state arrays: slot name (``"buf"``, ``"m"``, ``"v"``) -> parameter name ->
an array of that parameter's shape."""

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
SLOTS = {"sgd": (), "momentum": ("buf",), "nesterov": ("buf",), "adam": ("m", "v"),
         "adamw": ("m", "v")}  # fmt: skip


# --- validation, shared with TrainConfig ---------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_hyper(owner: str, kind: str | None, **values: Any) -> None:
    """Raise :class:`ConfigError` for an optimizer hyper-parameter out of range.

    Arguments:
        owner: the class named in the message (``"TrainConfig"`` or ``"Optimizer"``).
        kind: the optimizer, or None when it is not decided yet (then only ranges are checked).
        values: any of ``momentum``, ``beta1``, ``beta2`` (each in [0, 1)), ``eps`` (> 0) and
            ``weight_decay`` (>= 0, and AdamW's only).
    """
    if kind is not None and kind not in OPTIMIZERS:
        raise ConfigError(
            f"{owner}.optimizer must be one of {', '.join(OPTIMIZERS)}; got {kind!r}"
        )
    for name in ("momentum", "beta1", "beta2"):
        if name in values and not (_number(values[name]) and 0 <= values[name] < 1):
            raise ConfigError(
                f"{owner}.{name} must be a number in [0, 1), got {values[name]!r}"
            )
    if "eps" in values and not (_number(values["eps"]) and values["eps"] > 0):
        raise ConfigError(f"{owner}.eps must be a finite number > 0, got {values['eps']!r}")
    decay = values.get("weight_decay", 0.0)
    if not (_number(decay) and decay >= 0):
        raise ConfigError(f"{owner}.weight_decay must be a finite number >= 0, got {decay!r}")
    if decay and kind is not None and kind != "adamw":
        raise ConfigError(
            f"{owner}.weight_decay={decay} is AdamW's decoupled weight decay, but the optimizer "
            f"is {kind!r}; use optimizer 'adamw' (--optimizer adamw) or weight_decay 0"
        )


def check_schedule(owner: str, kind: str | None, warmup_steps: Any, decay_steps: Any,
                   decay_rate: Any) -> None:  # fmt: skip
    """Raise :class:`ConfigError` for a schedule setting out of range (``kind`` None: only
    ranges are checked)."""
    if kind is not None and kind not in SCHEDULES:
        raise ConfigError(f"{owner}.schedule must be one of {', '.join(SCHEDULES)}; got {kind!r}")
    if warmup_steps is not None and (
        isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0
    ):
        raise ConfigError(f"{owner}.warmup_steps must be an integer >= 0, got {warmup_steps!r}")
    if decay_steps is not None and (
        isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps <= 0
    ):
        raise ConfigError(
            f"{owner}.lr_decay_steps must be a positive integer (or omitted: a third of the "
            f"steps after the warmup), got {decay_steps!r}"
        )
    if not (_number(decay_rate) and 0 < decay_rate <= 1):
        raise ConfigError(f"{owner}.lr_decay_rate must be a number in (0, 1], got {decay_rate!r}")


# --- the optimizer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's kind and hyper-parameters: the static part of a training step.

    Arguments:
        kind: ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"`` or ``"adamw"``.
        momentum: ``mu`` of momentum and nesterov.
        beta1, beta2: Adam's moment decay rates.
        eps: Adam's denominator guard.
        weight_decay: AdamW's decoupled decay per unit learning rate (0 for the others).
    """

    kind: str = "sgd"
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_hyper("Optimizer", self.kind, momentum=self.momentum, beta1=self.beta1,
                    beta2=self.beta2, eps=self.eps, weight_decay=self.weight_decay)  # fmt: skip

    @property
    def slots(self) -> tuple[str, ...]:
        """The names of the state arrays this optimizer keeps per parameter."""
        return SLOTS[self.kind]


def as_optimizer(optimizer: Optimizer | str | None) -> Optimizer:
    """``None`` (plain SGD, what ``train_step`` did before optimizers existed), a kind with its
    default hyper-parameters, or an :class:`Optimizer` as it is."""
    if optimizer is None:
        return Optimizer()
    if isinstance(optimizer, str):
        return Optimizer(optimizer)
    if not isinstance(optimizer, Optimizer):
        raise ConfigError(
            f"optimizer must be an rnn_backends.optim.Optimizer, one of {', '.join(OPTIMIZERS)} "
            f"or None, got {optimizer!r}"
        )
    return optimizer


@dataclass
class OptState:
    """An optimizer's state between steps.

    Attributes:
        step: updates applied so far (the next one is number ``step + 1``).
        slots: slot name -> parameter name -> array (the backend's tensors between steps, NumPy
            in checkpoints).
    """

    step: int = 0
    slots: Slots = field(default_factory=dict)

    def map(self, fn: Callable[[Array], Array]) -> OptState:
        """The same state with ``fn`` applied to every array (e.g. tensors <-> NumPy)."""
        return OptState(self.step, {s: {k: fn(a) for k, a in d.items()}
                                    for s, d in self.slots.items()})  # fmt: skip

    def check(self, optimizer: Optimizer, shapes: dict[str, tuple[int, ...]]) -> None:
        """Raise :class:`ConfigError` unless this is a state of ``optimizer`` for parameters of
        these ``shapes``."""
        if sorted(self.slots) != sorted(optimizer.slots):
            raise ConfigError(
                f"opt_state holds the slots ({', '.join(sorted(self.slots)) or 'none'}) but "
                f"optimizer {optimizer.kind!r} keeps ({', '.join(optimizer.slots) or 'none'}); "
                "pass the opt_state returned by a step of the same optimizer, or None to start"
            )
        for slot, arrays in self.slots.items():
            got = {k: tuple(a.shape) for k, a in arrays.items()}
            if got != shapes:
                raise ConfigError(
                    f"opt_state slot {slot!r} does not match the parameters (names or shapes "
                    "differ); pass the opt_state of these parameters, or None to start"
                )


class Rates(NamedTuple):
    """The traced scalars of one update: ``lr``; ``step_size = lr / c1`` and ``root = 1 /
    sqrt(c2)`` (Adam's bias corrections folded in); ``decay = 1 - lr * weight_decay`` (AdamW).
    For optimizers that do not use one, it is 1 (or ``lr``)."""

    lr: Any
    step_size: Any
    root: Any
    decay: Any


def step_rates(optimizer: Optimizer, step: int, lr: float) -> Rates:
    """The :class:`Rates` of update number ``step + 1`` at learning rate ``lr`` (Python floats,
    computed outside any compiled code)."""
    if optimizer.kind not in ("adam", "adamw"):
        return Rates(float(lr), float(lr), 1.0, 1.0)
    t = step + 1
    c1, c2 = 1.0 - optimizer.beta1**t, 1.0 - optimizer.beta2**t
    return Rates(float(lr), lr / c1, 1.0 / math.sqrt(c2), 1.0 - lr * optimizer.weight_decay)


def global_norm(ops: Ops, grads: dict[str, Array]) -> Array:
    """The L2 norm over every gradient tensor together (a scalar tensor)."""
    return ops.sqrt(sum(ops.sum(g * g) for g in grads.values()))


def update(
    ops: Ops,
    optimizer: Optimizer,
    params: dict[str, Array],
    grads: dict[str, Array],
    slots: Slots,
    rates: Rates,
    max_norm: Any,
) -> tuple[dict[str, Array], Slots, Array]:
    """Clip the gradients by their global norm, then apply one update of ``optimizer``.

    Arguments:
        params, grads: tensors keyed alike, any shapes.
        slots: the optimizer's state arrays (``{}`` for sgd), keyed by slot, then parameter.
        rates: this update's scalars (:func:`step_rates`), Python floats or scalar tensors.
        max_norm: the clipping threshold, a positive number or ``inf``, float or scalar tensor.
    Returns:
        (new params, new slots, the gradient norm before clipping). A zero gradient gives
        ``max_norm / 0 = inf``, so a scale of 1 and never NaN.
    """
    norm = global_norm(ops, grads)
    scale = ops.minimum(max_norm / norm, 1.0)
    kind = optimizer.kind
    if kind == "sgd":
        step = scale * rates.lr  # one scalar product, then one multiply-subtract per tensor
        return {k: p - step * grads[k] for k, p in params.items()}, {}, norm
    g = {k: grads[k] * scale for k in params}
    if kind in ("momentum", "nesterov"):
        mu = optimizer.momentum
        buf = {k: slots["buf"][k] * mu + g[k] for k in params}
        if kind == "nesterov":
            return ({k: p - rates.lr * (g[k] + buf[k] * mu) for k, p in params.items()},
                    {"buf": buf}, norm)  # fmt: skip
        return {k: p - rates.lr * buf[k] for k, p in params.items()}, {"buf": buf}, norm
    b1, b2 = optimizer.beta1, optimizer.beta2
    m = {k: slots["m"][k] * b1 + g[k] * (1.0 - b1) for k in params}
    v = {k: slots["v"][k] * b2 + (g[k] * g[k]) * (1.0 - b2) for k in params}
    new = {}
    for k, p in params.items():
        if kind == "adamw":
            p = p * rates.decay
        # sqrt(v / c2) as sqrt(v) / sqrt(c2): the bias corrections stay scalars.
        new[k] = p - rates.step_size * (m[k] / (ops.sqrt(v[k]) * rates.root + optimizer.eps))
    return new, {"m": m, "v": v}, norm


# --- schedules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every update of a run.

    Arguments:
        kind: ``"constant"``, ``"step"`` or ``"cosine"``.
        warmup_steps: updates of linear warmup, ``lr * (s + 1) / warmup_steps`` for update s
            (0-based) below it.
        total_steps: the run's updates; the cosine spans those after the warmup (needed by
            ``cosine``, and by ``step`` without ``decay_steps``).
        decay_steps: ``step``: multiply by ``decay_rate`` every this many updates after the
            warmup (None: a third of them, so the rate drops twice).
        decay_rate: ``step``'s factor.
    """

    kind: str = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None
    decay_steps: int | None = None
    decay_rate: float = 0.1

    def __post_init__(self) -> None:
        check_schedule("Schedule", self.kind, self.warmup_steps, self.decay_steps,
                       self.decay_rate)  # fmt: skip
        needs_total = self.kind == "cosine" or (self.kind == "step" and self.decay_steps is None)
        if needs_total and not (isinstance(self.total_steps, int) and self.total_steps > 0):
            raise ConfigError(
                f"the {self.kind} schedule needs the run's total number of steps (total_steps > "
                f"0), got {self.total_steps!r}"
            )

    def lr(self, base_lr: float, step: int) -> float:
        """The learning rate of update ``step`` (0-based) for a peak rate ``base_lr``."""
        if step < self.warmup_steps:
            return base_lr * (step + 1) / self.warmup_steps
        s = step - self.warmup_steps
        if self.kind == "constant":
            return base_lr
        after = max(1, (self.total_steps or 0) - self.warmup_steps)
        if self.kind == "step":
            every = self.decay_steps or max(1, after // 3)
            return base_lr * self.decay_rate ** (s // every)
        # A step past the planned end (it cannot happen in train) stays at the end: 0.
        progress = min(1.0, s / after)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
