"""Local (shadow) checks: single training steps replayed from a framework's own state.

Float32 trajectories drift apart (rounding is amplified by a chaotic recurrence), so after a few
hundred steps two correct runs no longer compare step by step. A single step does: at a few
sampled steps the worker saves everything the step starts from (its float32 parameters, the
carried state, the optimizer's state, the batch and the learning rate) and everything it ends
with (loss, gradient norm, new parameters, new state, new optimizer state). The orchestrator then
replays that one step in float64 with the NumPy oracle from exactly the saved start, and in
float32 with the ensemble's members (:mod:`rnn_backends.ensemble`). A bug (a skipped clip, a relu
cell, a dropped gradient, a transposed matrix, a frozen layer) shows at the first sampled step
where it matters, however chaotic the run, and the cost is bounded by the number of sampled
steps, not by the length of the run.

The recorder is generic over what a step carries: every array that ``train_step`` takes or
returns besides the batch is saved and compared by name (``params/W_hh``, ``state/0``,
``opt/m/W_hh``, ...).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, overload

import numpy as np

from .checkpointing import write_json

FOLDER = "steps"


def sampled_steps(total: int, count: int) -> list[int]:
    """``count`` step numbers in ``[0, total)``: the first three (where most bugs show first),
    then spaced geometrically to the last (every stage of training, trained weights included)."""
    if total <= 0 or count <= 0:
        return []
    early = list(range(min(3, total, count)))
    rest = max(count - len(early), 0)
    late: np.ndarray | list[float] = (
        np.geomspace(max(len(early), 1), total - 1, rest) if rest and total > 3 else []
    )
    return sorted({*early, *(int(round(x)) for x in late)})


@overload
def public_state(arrays: list[np.ndarray], states: int) -> tuple[np.ndarray, ...]: ...


@overload
def public_state(arrays: None, states: int) -> None: ...


def public_state(arrays: list[np.ndarray] | None, states: int) -> tuple[np.ndarray, ...] | None:
    """A backend's carried state as the public tuple of ``states`` arrays (L * D, B, H).

    Framework backends carry one tensor, (B, H) or (S * L * D, B, H); the oracle carries the
    public tuple itself. Both are stacked along the first axis and split into ``states`` parts.
    """
    if arrays is None:
        return None
    parts = [a[None] if a.ndim == 2 else a for a in arrays]
    stacked = np.concatenate(parts, axis=0)
    return tuple(np.split(stacked, states, axis=0))


class Recorder:
    """A backend whose ``train_step`` also saves the steps numbered in ``steps``.

    Everything else is the wrapped backend's (``train`` runs it like the backend itself).
    """

    def __init__(self, backend: Any, steps: list[int], folder: Path, states: int) -> None:
        self._backend = backend
        self._steps = set(steps)
        self._folder = Path(folder)
        self._states = states
        self._count = 0
        self.records: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def train_step(self, params: Any, X: np.ndarray, Y: np.ndarray, state: Any = None,
                   **kwargs: Any) -> Any:  # fmt: skip
        step, self._count = self._count, self._count + 1
        if step not in self._steps:
            return self._backend.train_step(params, X, Y, state, **kwargs)
        before = self._arrays(params, state, kwargs.get("opt_state"))
        res = self._backend.train_step(params, X, Y, state, **kwargs)
        after = self._arrays(res.params, res.state, getattr(res, "opt_state", None))
        self._folder.mkdir(parents=True, exist_ok=True)
        name = f"step_{step:06d}.npz"
        arrays = {"X": X, "Y": Y, **{f"before/{k}": v for k, v in before.items()},
                  **{f"after/{k}": v for k, v in after.items()}}  # fmt: skip
        # numpy's stub types **kwds as if a key could be its allow_pickle flag (a bool).
        np.savez(self._folder / name, **arrays)  # type: ignore[arg-type]
        opt = kwargs.get("opt_state")
        self.records.append({
            "step": step, "file": f"{FOLDER}/{name}", "loss": res.loss,
            "grad_norm": res.grad_norm, "lr": kwargs.get("lr"),
            "grad_clip": kwargs.get("grad_clip"),
            "opt_step": getattr(opt, "step", None),
            "optimizer": _optimizer_record(kwargs.get("optimizer")),
        })  # fmt: skip
        return res

    def _arrays(self, params: Any, state: Any, opt_state: Any) -> dict[str, np.ndarray]:
        b = self._backend
        first = next(iter(params.values()))
        numpy_params = params if isinstance(first, np.ndarray) else b.export(params)
        out = {f"params/{k}": np.asarray(v) for k, v in numpy_params.items()}
        if state is not None:
            carried = [np.asarray(b.to_numpy(s)) for s in state]
            for i, s in enumerate(public_state(carried, self._states)):
                out[f"state/{i}"] = s
        if opt_state is not None:
            exported = b.export_opt_state(opt_state)
            for slot, arrays in exported.slots.items():
                out.update({f"opt/{slot}/{k}": np.asarray(v) for k, v in arrays.items()})
        return out

    def save_index(self) -> None:
        write_json(self._folder / "index.json", self.records)


def load_step(out: Path, record: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """A saved step as ``{"X":..., "Y":..., "before": {...}, "after": {...}}``."""
    with np.load(out / record["file"]) as z:
        data: dict[str, Any] = {"before": {}, "after": {}}
        for key in z.files:
            side, _, name = key.partition("/")
            if name:
                data[side][name] = z[key]
            else:
                data[key] = z[key]
    return data


def load_index(folder: Path) -> list[dict[str, Any]]:
    path = folder / FOLDER / "index.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _group(arrays: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    pre = kind + "/"
    return {k[len(pre):]: v for k, v in arrays.items() if k.startswith(pre)}


def _optimizer_record(optimizer: Any) -> dict[str, Any] | None:
    """The step's optimizer (an ``optim.Optimizer``, a name or None) as JSON, for the replay."""
    if optimizer is None or isinstance(optimizer, str):
        return None if optimizer is None else {"kind": optimizer}
    return dataclasses.asdict(optimizer)


def step_inputs(saved: dict[str, Any], dtype: str, states: int) -> tuple[dict, Any, dict]:
    """(params, state, opt slots) of a saved step's start, cast to ``dtype``."""
    before = saved["before"]
    params = {k: v.astype(dtype) for k, v in _group(before, "params").items()}
    state_parts = _group(before, "state")
    state = tuple(state_parts[str(i)].astype(dtype) for i in range(states)) if state_parts else None
    slots: dict[str, dict[str, np.ndarray]] = {}
    for key, v in _group(before, "opt").items():
        slot, _, name = key.partition("/")
        slots.setdefault(slot, {})[name] = v.astype(dtype)
    return params, state, slots


def step_outputs(res: Any) -> dict[str, np.ndarray]:
    """A ``train_step`` result of the NumPy backend as the arrays the recorder saves."""
    out = {f"params/{k}": np.asarray(v) for k, v in res.params.items()}
    for i, s in enumerate(res.state or ()):
        out[f"state/{i}"] = np.asarray(s)
    opt = getattr(res, "opt_state", None)
    if opt is not None:
        for slot, arrays in opt.slots.items():
            out.update({f"opt/{slot}/{k}": np.asarray(v) for k, v in arrays.items()})
    return out


def replace_slots(opt_state: Any, slots: dict[str, dict[str, np.ndarray]]) -> Any:
    return dataclasses.replace(opt_state, slots=slots)


__all__ = [
    "FOLDER",
    "Recorder",
    "load_index",
    "load_step",
    "public_state",
    "sampled_steps",
    "step_inputs",
    "step_outputs",
]
