"""Detection power: the compare job FAILS on each injected bug, in float32 and in float64, and
its message names the framework, the quantity and the step.

The bugs are those the textbook's own implementations carry or that a port easily gets wrong: a
skipped gradient clip, relu instead of tanh, a dropped bias gradient, one gradient off by a
relative 1e-3, a transposed W_hh, and the MXNet deep RNN whose second layer is never updated.
Each framework gets them injected into its own path (its ops, its forward pass or its update;
the ``framework_name`` fixture); the NumPy core session injects them into a participant built on
the oracle's own code, so the judging logic is proved without any framework installed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from rnn_backends import compare, optim, reference
from rnn_backends.backends import registry
from rnn_backends.backends.base import Backend, StepResult, clip_threshold
from rnn_backends.backends.numpy_backend import NumpyBackend
from rnn_backends.compare import default_spec, run_compare

# Small and short: 128 windows of 8 steps, batch 32 (4 training steps), every check on.
TINY = {"hidden_size": 16, "batch_size": 32, "num_steps": 8, "max_epochs": 1, "num_train": 128,
        "num_val": 64}  # fmt: skip
CHECKS = {"trajectory": True, "members": 3, "sampled_steps": 3}


@dataclass(frozen=True)
class Bug:
    """One injected bug and where the verdict must see it first: a failure message matching
    ``quantity`` at step ``step``."""

    name: str
    quantity: str  # a regular expression for the quantity in the message
    step: int = 0
    spec: dict[str, Any] = field(default_factory=dict)
    variant: str | None = None  # the framework variant the bug lives in (None: the default)
    grads: Callable[[dict, float], tuple[dict, float]] | None = None  # before the update
    frozen: str | None = None  # parameters with this prefix are never updated
    forward: str | None = None  # "relu" or "transpose"
    update: float = 0.0  # every parameter's step scaled by 1 + this (the slots left right)
    evaluation: Callable[[dict], dict] | None = None  # the checkpoint weights when evaluated


BUGS = [
    # The book's JAX trainer: no clipping. A small threshold makes clipping engage at step 0.
    Bug("skipped-clip", r"\S+ after the step", spec={"grad_clip": 0.05, "lr": 2.0},
        grads=lambda g, max_norm: (g, float("inf"))),
    # The book's MXNet concise RNN: Gluon's rnn.RNN defaults to relu.
    Bug("relu", r"(gradient of \S+|loss)", variant="textbook", forward="relu"),
    Bug("dropped-bias-gradient", r"b_h after the step",
        grads=lambda g, max_norm: ({**g, "b_h": g["b_h"] * 0.0}, max_norm)),
    Bug("gradient-1e-3", r"W_hh after the step",
        grads=lambda g, max_norm: ({**g, "W_hh": g["W_hh"] * (1.0 + 1e-3)}, max_norm)),
    Bug("transposed-W_hh", r"(gradient of \S+|loss)", variant="textbook", forward="transpose"),
    # The book's MXNet deep RNN: its layers sit in a plain list the optimizer never sees.
    Bug("frozen-layer", r"l1\.\S+ after the step", spec={"num_layers": 2}, frozen="l1."),
    # Adam's step off by a relative 1e-3 while m and v are right (a wrong bias correction, or
    # a perturbed m in the update): only the parameters' update bound can see it.
    Bug("adam-update-1e-3", r"\S+ after the step", spec={"optimizer": "adam", "lr": 0.01},
        update=1e-3),
    # A checkpoint evaluated without its output bias (a layer built without one): only the
    # checkpoint checks can see it.
    Bug("checkpoint-without-b_q", r"validation perplexity of \S+'s checkpoint", step=None,
        evaluation=lambda p: {**p, "b_q": p["b_q"] * 0.0}),
]  # fmt: skip


def _spec(bug: Bug, dtype: str) -> compare.Spec:
    spec = default_spec("default", "quick", {**TINY, **bug.spec}, variant=bug.variant,
                        dtype=dtype, num_preds=10)  # fmt: skip
    spec.checks = dict(CHECKS)
    return spec


def _assert_caught(report: dict[str, Any], name: str, bug: Bug) -> None:
    assert not report["passed"], f"{bug.name} passed the {name} job"
    at = f" at step {bug.step}" if bug.step is not None else ""
    pattern = re.compile(rf"^{name}: ({bug.quantity}){at} differs")
    assert any(pattern.match(f) for f in report["failures"]), report["failures"]


# --- injection into a framework's own path -------------------------------------------------------


def _patch_update(monkeypatch: pytest.MonkeyPatch, bug: Bug) -> None:
    """Every framework's update (the fast and the generic step both end in it)."""
    real = optim.update

    def buggy(ops, optimizer, params, grads, slots, rates, max_norm):
        if bug.grads is not None:
            grads, max_norm = bug.grads(grads, max_norm)
        new, new_slots, norm = real(ops, optimizer, params, grads, slots, rates, max_norm)
        if bug.update:
            new = {k: v + (v - params[k]) * bug.update for k, v in new.items()}
        if bug.frozen:
            new = {k: params[k] if k.startswith(bug.frozen) else v for k, v in new.items()}
        return new, new_slots, norm

    monkeypatch.setattr(optim, "update", buggy)


def _patch_forward(monkeypatch: pytest.MonkeyPatch, backend_cls: type[Backend], bug: Bug) -> None:
    """relu for tanh in the framework's ops, or W_hh transposed in its forward pass."""
    if bug.forward == "relu":
        ops_cls = type(backend_cls(device="cpu", variant=bug.variant).ops)
        probe = ops_cls(None)

        def relu(x):
            return -probe.minimum(-x, 0.0)  # max(x, 0) with the framework's own op

        monkeypatch.setattr(ops_cls, "tanh", staticmethod(relu))
    elif bug.forward == "transpose":
        real = backend_cls._forward

        def transposed(self, params, X, h0):
            return real(self, {**params, "W_hh": self.ops.swap_bt(params["W_hh"])}, X, h0)

        monkeypatch.setattr(backend_cls, "_forward", transposed)


def _patch_evaluation(monkeypatch: pytest.MonkeyPatch, name: str, bug: Bug) -> None:
    """Participant ``name`` evaluates every checkpoint (the job's second phase) with
    ``bug.evaluation`` applied to its weights; its training is untouched."""
    real = compare.evaluate

    def wrong(backend, tensors, batches, carry_state):
        if backend.name == name and bug.evaluation is not None:
            tensors = backend.prepare(bug.evaluation(backend.export(tensors)))
        return real(backend, tensors, batches, carry_state)

    monkeypatch.setattr(compare, "evaluate", wrong)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_injected_bug_fails_the_job(framework_name, bug, dtype, tmp_path, monkeypatch):
    backend_cls = type(registry.get_backend(framework_name))
    if bug.evaluation:
        _patch_evaluation(monkeypatch, framework_name, bug)
    elif bug.forward:
        _patch_forward(monkeypatch, backend_cls, bug)
    else:
        _patch_update(monkeypatch, bug)
    report = run_compare(tmp_path, [framework_name], _spec(bug, dtype), log=lambda *_: None)
    _assert_caught(report, framework_name, bug)
    assert "**FAIL**" in (tmp_path / "report.md").read_text()


# --- the same bugs in a participant built on the oracle's code (the core session) ---------------


class _ReluNumpy:
    """NumPy with ``tanh`` replaced by relu, for the oracle module while a buggy step runs."""

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @staticmethod
    def tanh(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)


class BuggyOracle(NumpyBackend):
    """The NumPy oracle with :attr:`bug` injected between the parts of its step."""

    name = "buggy"
    bug: Bug

    @contextlib.contextmanager
    def _forward_bug(self) -> Iterator[None]:
        saved = reference.np
        if self.bug.forward == "relu":
            reference.np = _ReluNumpy()  # type: ignore[assignment]
        try:
            yield
        finally:
            reference.np = saved

    def _params_in(self, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        params = self.prepare(params)
        if self.bug.forward == "transpose":
            params = {**params, "W_hh": params["W_hh"].T}
        return params

    def _grads_out(self, grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.bug.forward == "transpose":
            grads = {**grads, "W_hh": grads["W_hh"].T}  # d L / d W from d L / d W^T
        return grads

    def loss_and_grads(self, params, X, Y, state=None):
        with self._forward_bug():
            loss, grads, _ = reference.model_loss_and_grads(self._params_in(params), X, Y,
                                                            self._state(state))  # fmt: skip
        return loss, self._grads_out(grads)

    def loss(self, params, X, Y, state=None):
        with self._forward_bug():
            logits, final, _ = reference.model_forward(self._params_in(params), X,
                                                       self._state(state))  # fmt: skip
        return reference.cross_entropy(logits, Y), final

    def train_step(self, params, X, Y, state=None, *, lr, grad_clip, **kwargs: Any) -> StepResult:
        if self.bug.update:  # the oracle's own Adam step, then the step scaled
            res = super().train_step(params, X, Y, state, lr=lr, grad_clip=grad_clip, **kwargs)
            res.params = {k: v + (v - params[k]) * self.bug.update for k, v in res.params.items()}
            return res
        params = self.prepare(params)
        with self._forward_bug():
            loss, grads, final = reference.model_loss_and_grads(self._params_in(params), X, Y,
                                                                self._state(state))  # fmt: skip
        grads, max_norm = self._grads_out(grads), clip_threshold(grad_clip)
        if self.bug.grads is not None:
            grads, max_norm = self.bug.grads(grads, max_norm)
        clipped, norm = reference.clip_grads(grads, max_norm)
        new = reference.sgd(params, clipped, lr)
        if self.bug.frozen:
            new = {k: params[k] if k.startswith(self.bug.frozen) else v for k, v in new.items()}
        return StepResult(params=new, loss=loss, grad_norm=norm, state=final)


def _install_buggy(monkeypatch: pytest.MonkeyPatch, bug: Bug) -> None:
    """Register a participant named ``buggy`` that runs the oracle's code with ``bug``."""
    spec = registry.BackendSpec("buggy", "numpy_backend", "NumpyBackend", "numpy", None,
                                "Buggy oracle")  # fmt: skip
    monkeypatch.setitem(registry.BACKENDS, "buggy", spec)
    real_get = compare.get_backend

    def get_backend(name, **kwargs):
        if name != "buggy":
            return real_get(name, **kwargs)
        kwargs.pop("variant", None)
        backend = BuggyOracle(**kwargs)
        backend.bug = bug
        return backend

    monkeypatch.setattr(compare, "get_backend", get_backend)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bug", BUGS, ids=[b.name for b in BUGS])
def test_injected_bug_fails_the_job_on_the_oracle_side(bug, dtype, tmp_path, monkeypatch):
    """No framework needed: a participant named ``buggy`` runs the oracle's code with the bug."""
    _install_buggy(monkeypatch, bug)
    if bug.evaluation:
        _patch_evaluation(monkeypatch, "buggy", bug)
    report = run_compare(tmp_path, ["buggy"], _spec(bug, dtype), log=lambda *_: None)
    _assert_caught(report, "buggy", bug)


def test_the_correct_oracle_participant_passes(tmp_path, monkeypatch):
    """The same participant without a bug passes: the failures above are the bugs' doing."""
    clean = Bug("none", "")
    _install_buggy(monkeypatch, clean)
    for dtype in ("float32", "float64"):
        report = run_compare(tmp_path / dtype, ["buggy"], _spec(clean, dtype),
                             log=lambda *_: None)  # fmt: skip
        assert report["passed"], report["failures"]
