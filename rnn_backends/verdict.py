"""The checks behind the compare job's verdict: each one a deviation and what is allowed.

Ground truth is always the float64 NumPy oracle, started from the very numbers the framework
started from. What is allowed depends on the dtype:

* float64: fixed tolerances, as strict as ever (:data:`F64_TOLERANCES`).
* float32: two bounds, and a result must satisfy both.
  - *componentwise* (:mod:`rnn_backends.numerics`): for one evaluation at given weights (the
    step-0 loss and gradients), derived from the rounding model, entry by entry;
  - *ensemble band* (:mod:`rnn_backends.ensemble`): the largest deviation of the members
    (the float32 oracle under permutations of hidden units and batch rows) from the same float64
    truth, times :data:`MARGIN`. It covers what the componentwise bound cannot: a step from
    trained weights, where the derived bound grows like the product of ``|W_hh|`` over the
    sequence (10^15 times the real error after 600 steps of the quick preset), and whole
    trajectories;
  - where the band is one number per tensor but the error is not, a derived bound on top of
    it: an Adam step's parameters (:mod:`rnn_backends.updatebound`, from the allowances of the
    slots ``m`` and ``v``) and a checkpoint's perplexity (the loss reductions, which every
    member computes alike: :func:`rnn_backends.numerics.reduction_allowance`).

:data:`MARGIN` is 10. The members round like the least accurate float32 computation we know of
(NumPy accumulates sums over all B*T tokens one after the other, where frameworks use blocked or
pairwise sums), so a correct framework is expected inside the band itself; the factor 10 leaves
room for a framework that rounds in yet another order and for the spread of a maximum over a few
members (a factor of about 2 between repetitions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import numerics, updatebound

MARGIN = 10.0
# Per-step losses of float32 runs are asserted while the ensemble's own band stays below this
# relative deviation: beyond it, rounding amplified by the chaotic recurrence moves the loss as
# much as a real bug's first effects would (1e-3 and up), so a step-by-step comparison no longer
# tells them apart. Past the cut, the single-step (shadow) checks and the final perplexity do.
TRAJECTORY_CUT = 1e-3
F64_TOLERANCES = {"grad": 1e-10, "loss": 1e-9, "ppl": 1e-9, "step": 1e-9}


@dataclass(frozen=True)
class Check:
    """One comparison with the float64 oracle: ``deviation`` against ``allowed``."""

    what: str  # e.g. "gradient of W_hh", "W_hh after the step", "training loss"
    step: int | None  # the training step, None for end-of-run quantities
    deviation: float
    allowed: float
    rule: str  # how ``allowed`` was obtained
    where: str = ""  # the entry, for componentwise checks

    @property
    def ratio(self) -> float:
        if self.deviation == 0:
            return 0.0
        if not self.allowed > 0 or math.isnan(self.deviation):
            return math.inf
        return self.deviation / self.allowed

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0

    def describe(self) -> str:
        at = f" at step {self.step}" if self.step is not None else ""
        entry = f" (entry {self.where})" if self.where else ""
        return (
            f"{self.what}{at} differs from the float64 oracle by {self.deviation:.2e}{entry}, "
            f"{self.ratio:.3g}x what is allowed ({self.allowed:.2e}, {self.rule})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def _max_abs(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    return float("inf") if np.isnan(d).any() else float(d.max())


def _scale(x: Any) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.abs(x).max()) if x.size else 0.0


def _excess(actual: Any, truth: Any, u: float) -> float:
    """``max |actual - truth|`` beyond the rounding of storing the result: each entry's
    deviation less ``u |truth|`` (what the final rounding of a correct computation may add)."""
    a, t = np.asarray(actual, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if a.size == 0:
        return 0.0
    d = np.abs(a - t) - u * np.abs(t)
    return float("inf") if np.isnan(d).any() else float(max(d.max(), 0.0))


def band_check(what: str, step: int | None, actual: Any, truth: Any, members: list[Any],
               dtype: str, before: Any = None) -> Check:  # fmt: skip
    """The deviation of ``actual`` from ``truth`` beyond the rounding of the stored result,
    against :data:`MARGIN` times the members' largest such deviation; at least ``MARGIN u``
    times the largest entry of ``truth``, or of the step ``truth - before`` when given (a
    parameter's update: what a bug in the step changes)."""
    u = numerics.UNIT_ROUNDOFF[dtype]
    band = max((_excess(m, truth, u) for m in members), default=0.0)
    moved = None if before is None else np.asarray(truth, np.float64) - np.asarray(before)
    floor = u * _scale(truth if moved is None else moved)
    rule = "the ensemble band" if band >= floor else "the rounding of the result"
    return Check(what, step, _excess(actual, truth, u), MARGIN * max(band, floor),
                 f"{MARGIN:g}x {rule}, beyond the rounding of the stored result")  # fmt: skip


def tolerance_check(what: str, step: int | None, actual: Any, truth: Any, tol: float,
                    scale: float | None = None) -> Check:  # fmt: skip
    """``max |actual - truth|`` against ``tol`` times ``scale`` (default ``max |truth|``)."""
    s = _scale(truth) if scale is None else scale
    return Check(what, step, _max_abs(actual, truth), tol * s, f"tolerance {tol:.0e} relative")


def componentwise_check(what: str, step: int | None, ratio: numerics.Ratio) -> Check:
    return Check(what, step, ratio.deviation, ratio.allowed, "componentwise rounding bound",
                 where=str(ratio.index) if ratio.index else "")  # fmt: skip


def relative_band_check(what: str, step: int | None, actual: float, truth: float,
                        band: float, floor: float) -> Check:  # fmt: skip
    """A scalar's relative deviation against ``max(MARGIN * band, floor)``."""
    dev = abs(actual - truth) / abs(truth) if truth else abs(actual - truth)
    allowed = max(MARGIN * band, floor)
    rule = f"{MARGIN:g}x the ensemble band" if MARGIN * band >= floor else "the rounding floor"
    return Check(what, step, dev, allowed, rule + " (relative)")


def evaluation_check(what: str, actual: float, exact: float, members: list[float],
                     reduction: float) -> Check:  # fmt: skip
    """A checkpoint's perplexity evaluated in float32: its relative deviation against
    :data:`MARGIN` times the members' largest (their evaluations of the same weights: the
    forward pass rounded in other orders), plus ``reduction``, the derived bound of the loss
    reductions (:func:`rnn_backends.numerics.reduction_allowance`), which the members all
    compute alike and so cannot sample."""
    dev = abs(actual - exact) / abs(exact)
    band = max((abs(m - exact) / abs(exact) for m in members), default=0.0)
    return Check(what, None, dev, MARGIN * band + reduction,
                 f"{MARGIN:g}x the band of {len(members)} evaluations plus the rounding bound "
                 "of the loss reductions (relative)")  # fmt: skip


# --- what a saved step holds, by name ------------------------------------------------------------


def quantity_name(key: str, state_names: tuple[str, ...]) -> str:
    """``params/W_hh`` -> ``W_hh after the step``; ``state/0`` -> ``carried state h``; ..."""
    kind, _, rest = key.partition("/")
    if kind == "params":
        return f"{rest} after the step"
    if kind == "state":
        i = int(rest)
        return f"carried state {state_names[i] if i < len(state_names) else i}"
    slot, _, name = rest.partition("/")
    return f"optimizer slot {slot} of {name}"


def step_checks(
    step: int,
    dtype: str,
    actual: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    members: list[dict[str, np.ndarray]],
    before: dict[str, np.ndarray],
    state_names: tuple[str, ...],
    update: dict[str, Any] | None = None,
) -> list[Check]:
    """Every array a replayed step ends with (parameters, carried state, optimizer slots).

    ``update``: the step's optimizer (``optim.Optimizer`` fields as a dict, plus ``lr`` and
    ``step``, the updates before this one). In float32 an Adam step's parameters may also
    differ by what their slots' allowances imply through the update (:func:`adam_check`)."""
    checks: dict[str, Check] = {}
    for key in sorted(truth):
        what = quantity_name(key, state_names)
        if key not in actual:
            checks[key] = Check(what, step, math.inf, 0.0, "missing from the framework's step")
        elif dtype == "float64":
            # Parameters: relative to how far the step moved them (the update), the part a bug
            # changes; the rest relative to their size.
            ref = truth[key] - before[key] if key in before and key.startswith("params/") else None
            scale = _scale(ref) if ref is not None and _scale(ref) > 0 else None
            checks[key] = tolerance_check(what, step, actual[key], truth[key],
                                          F64_TOLERANCES["step"], scale)  # fmt: skip
        else:
            start = before.get(key) if key.startswith("params/") else None
            checks[key] = band_check(what, step, actual[key], truth[key],
                                     [m[key] for m in members], dtype, start)  # fmt: skip
    if dtype != "float64" and update is not None and update.get("kind") in ("adam", "adamw"):
        for key in [k for k in checks if k.startswith("params/") and k in actual]:
            name = key[len("params/"):]
            slots = {s: (truth[f"opt/{s}/{name}"], checks[f"opt/{s}/{name}"])
                     for s in ("m", "v") if f"opt/{s}/{name}" in truth
                     and f"opt/{s}/{name}" in checks}  # fmt: skip
            if len(slots) == 2:
                checks[key] = adam_check(checks[key], actual[key], truth[key], before[key],
                                         slots, update, dtype)  # fmt: skip
    return list(checks.values())


def adam_check(band: Check, actual: Any, truth: Any, before: Any,
               slots: dict[str, tuple[np.ndarray, Check]], update: dict[str, Any],
               dtype: str) -> Check:  # fmt: skip
    """An Adam step's parameter: each entry's deviation beyond the rounding of the stored result
    within the larger of the band's allowance (``band``, tensor-wide) and the entry's update
    bound (:func:`rnn_backends.updatebound.adam_allowance`, from the allowances of the slots
    ``m`` and ``v``: ``slots`` maps each to its float64 value and its check)."""
    u = numerics.UNIT_ROUNDOFF[dtype]
    (m, m_check), (v, v_check) = slots["m"], slots["v"]
    derived = updatebound.adam_allowance(
        kind=update["kind"], lr=float(update["lr"]), step=int(update["step"]),
        beta1=float(update["beta1"]), beta2=float(update["beta2"]), eps=float(update["eps"]),
        weight_decay=float(update.get("weight_decay", 0.0)), before=before,
        m=m, v=v, e_m=u * np.abs(m) + m_check.allowed, e_v=u * np.abs(v) + v_check.allowed, u=u,
    )  # fmt: skip
    a, t = np.asarray(actual, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    excess = np.maximum(np.abs(a - t) - u * np.abs(t), 0.0)
    allowed = np.maximum(derived, band.allowed)
    ratio = numerics.worst_ratio(excess, np.zeros_like(excess), allowed)
    if ratio.index and derived[ratio.index] <= band.allowed:
        rule = band.rule
    else:
        rule = ("the update's rounding bound (Adam, from its slots' allowances), beyond the "
                "rounding of the stored result")  # fmt: skip
    return Check(band.what, band.step, ratio.deviation, ratio.allowed, rule,
                 where=str(ratio.index) if ratio.index else "")  # fmt: skip


def worst(checks: list[Check]) -> Check | None:
    return max(checks, key=lambda c: c.ratio, default=None)


# --- trajectories --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """The float32 noise band of a run: per step, the members' largest relative loss deviation
    from the float64 trajectory, and the steps it is asserted on (those before ``cut``)."""

    band: np.ndarray
    floor: float
    cut: int  # the first step whose band exceeds TRAJECTORY_CUT (the run's length if none)

    def allowed(self) -> np.ndarray:
        return np.maximum(MARGIN * self.band, self.floor)

    @staticmethod
    def of(truth: np.ndarray, members: list[np.ndarray], floor: float) -> Band:
        devs = [np.abs(np.asarray(m) - truth) / np.abs(truth) for m in members]
        band = np.max(devs, axis=0) if devs else np.zeros_like(truth)
        over = np.nonzero(band > TRAJECTORY_CUT)[0]
        return Band(band, floor, int(over[0]) if over.size else len(truth))


def loss_deviation(losses: Any, truth: Any) -> np.ndarray:
    losses, truth = np.asarray(losses, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    return np.abs(losses - truth) / np.abs(truth)


def trajectory_check(losses: Any, truth: np.ndarray, band: Band | None) -> Check:
    """The worst per-step training loss: float64 against its tolerance over every step, float32
    against the band over the steps before its cut."""
    dev = loss_deviation(losses, truth)
    if band is None:
        step = int(np.argmax(dev)) if dev.size else 0
        return Check("training loss", step, float(dev[step]) if dev.size else 0.0,
                     F64_TOLERANCES["loss"], "tolerance 1e-9 relative")  # fmt: skip
    upto = band.cut
    allowed = band.allowed()[:upto]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dev[:upto] == 0, 0.0, dev[:upto] / allowed)
    if not upto:
        return Check("training loss", None, 0.0, 1.0, "no step before the cut")
    step = int(np.argmax(np.nan_to_num(ratio, nan=np.inf)))
    return Check("training loss", step, float(dev[step]), float(allowed[step]),
                 f"{MARGIN:g}x the ensemble band (relative; steps 0-{upto - 1} of {len(dev)})")


__all__ = [
    "F64_TOLERANCES",
    "MARGIN",
    "TRAJECTORY_CUT",
    "Band",
    "Check",
    "adam_check",
    "band_check",
    "componentwise_check",
    "evaluation_check",
    "loss_deviation",
    "quantity_name",
    "relative_band_check",
    "step_checks",
    "tolerance_check",
    "trajectory_check",
    "worst",
]
