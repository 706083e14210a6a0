"""The thin interface every framework implements.

An adapter supplies only what differs between frameworks, in these sections and this order:

1. arrays: NumPy <-> native conversion, device placement and matmul precision;
2. ops: the array functions ``cells.py`` needs;
3. time loop: ``scan`` (a Python loop by default);
4. autodiff: ``value_and_grad``;
5. native layer: the framework's own fused RNN loaded with the canonical weights;
6. compiled step: an optional faster ``_step`` (the generic one is autodiff + clip + SGD).

Everything public speaks NumPy: ``forward``, ``loss``, ``loss_and_grads`` and ``concat_trick``
take and return NumPy arrays. ``train_step`` keeps parameters native between steps; convert with
``prepare`` and ``export``.

The model (cell, layers, directions) is read off the parameter names (``params.infer_model``);
the GRU's reset convention, which the weights cannot show, is fixed when the backend is made
(``gru_reset_after``). Inside, the recurrent state travels as one native array, the *carry*:
(B, H) when the model has a single state tensor (a one-layer one-direction rnn or gru, as the
fused fast paths expect), else (S * L * D, B, H): the public state's S tensors of (L * D, B, H)
one after the other.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import cells
from ..config import CELL_STATES, ModelConfig
from ..errors import ConfigError
from ..params import infer_model

Params = dict[str, np.ndarray]
State = tuple[np.ndarray, ...]
"""A recurrent state: a tuple of (num_layers * num_directions, B, H) arrays, layer-major as
torch's ``h_n``: ``(h,)`` for the rnn and gru, ``(h, c)`` for the lstm."""

DTYPES = ("float32", "float64")
VARIANTS = ("textbook", "concat", "fast", "native")


@dataclass
class StepResult:
    """What :meth:`Backend.train_step` returns."""

    params: Any  # native parameters, to pass to the next step
    loss: float  # mean cross-entropy of the batch, before the update
    grad_norm: float  # global gradient norm before clipping
    state: Any  # native final state, detached (feed it to the next batch when carrying state)


class Backend(abc.ABC):
    """One framework's implementation of the char-level RNN language model.

    Arguments:
        dtype: ``"float64"`` or ``"float32"``.
        device: ``"cpu"``, ``"gpu"`` or ``None`` (a GPU when one is present).
        variant: ``"textbook"``, ``"concat"``, ``"fast"`` or ``"native"`` (the framework's own
            fused layer), all computing the same numbers.
        gru_reset_after: the GRU convention (``ModelConfig.gru_reset_after``): the reset gate
            after the recurrent matmul (cuDNN's) or before it (the book's scratch GRU).
    """

    name: ClassVar[str]
    framework: ClassVar[str]
    variants: ClassVar[tuple[str, ...]] = VARIANTS
    default_variant: ClassVar[str] = "fast"

    def __init__(
        self,
        dtype: str = "float64",
        device: str | None = None,
        variant: str | None = None,
        gru_reset_after: bool = True,
    ):
        if not isinstance(gru_reset_after, bool):
            raise ConfigError(f"gru_reset_after must be True or False, got {gru_reset_after!r}")
        self.gru_reset_after = gru_reset_after
        self._models: dict[Any, ModelConfig] = {}
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        variant = variant or self.default_variant
        if variant not in self.variants:
            raise ConfigError(
                f"backend {self.name!r} has no variant {variant!r}; choose one of "
                f"{', '.join(self.variants)}"
            )
        if device not in (None, "cpu", "gpu", "cuda"):
            raise ConfigError(f"device must be cpu, gpu or omitted; got {device!r}")
        self.dtype = dtype
        self.variant = variant
        self.device = self._place(device)
        self.ops = self._make_ops()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dtype} {self.variant} on {self.device}>"

    # --- 1. arrays, device and precision ----------------------------------------------------------

    @abc.abstractmethod
    def _place(self, device: str | None) -> str:
        """Pick the device (and set full matmul precision); return its description."""

    @abc.abstractmethod
    def asarray(self, x: np.ndarray) -> Any:
        """A native array on this backend's device; floats become ``self.dtype``, ints stay ints."""

    @abc.abstractmethod
    def to_numpy(self, x: Any) -> np.ndarray: ...

    def version(self) -> str:
        import importlib

        return str(importlib.import_module(self.framework).__version__)

    # --- 2. ops -----------------------------------------------------------------------------------

    @abc.abstractmethod
    def _make_ops(self) -> cells.Ops: ...

    # --- 3. time loop -----------------------------------------------------------------------------

    def scan(self, step: Callable, carry: Any, xs: Any) -> tuple[Any, Any]:
        """``carry, y = step(carry, xs[t])`` for every t; returns the last carry and stacked ys."""
        ys = []
        for t in range(xs.shape[0]):
            carry, y = step(carry, xs[t])
            ys.append(y)
        return carry, self._stack(ys)

    def _stack(self, ys: list[Any]) -> Any:
        raise NotImplementedError

    # --- 4. autodiff ------------------------------------------------------------------------------

    @abc.abstractmethod
    def value_and_grad(
        self, fn: Callable[[dict[str, Any]], tuple[Any, Any]], params: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        """``(value, aux, grads)`` of ``fn(params) -> (scalar, aux)``; aux is not differentiated."""

    # --- 5. native layer --------------------------------------------------------------------------

    def native_logits(self, params: dict[str, Any], X: Any, h0: Any) -> tuple[Any, Any]:
        """Logits (B, T, V) and final carry through the framework's fused recurrent layer."""
        raise NotImplementedError(f"backend {self.name!r} has no native layer path")

    def _reset_before_unsupported(self, layer: str) -> ConfigError:
        return ConfigError(
            f"{layer} computes the GRU with the reset gate after the recurrent matmul only; the "
            f"reset-before GRU (gru_reset_after=False, the book's scratch GRU) cannot be loaded "
            f"into it exactly. Use variant 'fast', 'concat' or 'textbook' of backend "
            f"{self.name!r}, or gru_reset_after=True"
        )

    def _carry_parts(self, model: ModelConfig, carry: Any) -> list[Any]:
        """The carry as one (B, H) array per state tensor, layer and direction."""
        n = len(CELL_STATES[model.cell]) * model.num_layers * model.num_directions
        return [carry] if n == 1 else [carry[k] for k in range(n)]

    def _join_carry(self, parts: list[Any]) -> Any:
        return parts[0] if len(parts) == 1 else self.ops.stack(parts)

    # --- the model, shared by every framework -----------------------------------------------------

    def model(self, params: dict[str, Any]) -> ModelConfig:
        """The model ``params`` describe (cell, layers, directions) with this GRU convention."""
        key = tuple((k, tuple(v.shape)) for k, v in params.items())
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = infer_model(params, self.gru_reset_after)
        return model

    def logits(self, params: dict[str, Any], X: Any, h0: Any) -> tuple[Any, Any]:
        if self.variant == "native":
            return self.native_logits(params, X, h0)
        model = self.model(params)
        logits, final = cells.model_logits(
            self.ops, self.scan, params, X, tuple(self._carry_parts(model, h0)), model,
            self.variant,
        )
        return logits, self._join_carry(list(final))

    def _loss_fn(self, X: Any, Y: Any, h0: Any) -> Callable[[dict[str, Any]], tuple[Any, Any]]:
        def fn(params: dict[str, Any]) -> tuple[Any, Any]:
            logits, h_last = self.logits(params, X, h0)
            return cells.cross_entropy(self.ops, logits, Y), h_last

        return fn

    def _zeros_state(self, params: dict[str, Any], batch: int) -> Any:
        """A zero carry: (B, H), or (S * L * D, B, H) for models with several state tensors."""
        if set(params) == {"W_hh"}:  # just enough to say H (a framework-specific test asks so)
            return self.asarray(np.zeros((batch, params["W_hh"].shape[0]), dtype=self.dtype))
        model = self.model(params)
        n = len(CELL_STATES[model.cell]) * model.num_layers * model.num_directions
        shape = (batch, model.hidden_size) if n == 1 else (n, batch, model.hidden_size)
        return self.asarray(np.zeros(shape, dtype=self.dtype))

    def _h0(self, params: dict[str, Any], state: Any, batch: int) -> Any:
        """The native carry from a public state (a tuple of NumPy (L * D, B, H) arrays) or from
        a native one (what ``train_step`` and ``loss`` return: a 1-tuple of the carry)."""
        if state is None:
            return self._zeros_state(params, batch)
        if not isinstance(state[0], np.ndarray):
            return state[0]
        model = self.model(params)
        names = CELL_STATES[model.cell]
        if len(state) != len(names):
            raise ConfigError(
                f"a {model.cell} state is a tuple of {len(names)} arrays ({', '.join(names)}), "
                f"got {len(state)}"
            )
        LD, H = model.num_layers * model.num_directions, model.hidden_size
        parts = [np.asarray(s, dtype=self.dtype) for s in state]
        if LD == 1 and all(p.shape == (batch, H) for p in parts):
            parts = [p[None] for p in parts]  # a bare (B, H) state saved by an earlier version
        for name, p in zip(names, parts, strict=True):
            if p.shape != (LD, batch, H):
                raise ConfigError(
                    f"state {name} has shape {p.shape}; this model needs {(LD, batch, H)} "
                    "(layers * directions, batch, hidden)"
                )
        carry = np.concatenate(parts, axis=0)
        return self.asarray(carry[0] if len(carry) == 1 else carry)

    def _public_state(self, params: dict[str, Any], carry: Any) -> State:
        """The native carry as the public tuple of (L * D, B, H) NumPy arrays."""
        model = self.model(params)
        c = self.to_numpy(carry)
        n = len(CELL_STATES[model.cell])
        c = c.reshape(n, model.num_layers * model.num_directions, *c.shape[-2:])
        return tuple(c[j] for j in range(n))

    # --- 6. training step -------------------------------------------------------------------------

    def _step(
        self, params: dict[str, Any], X: Any, Y: Any, h0: Any, lr: float, max_norm: float
    ) -> tuple[dict[str, Any], Any, Any, Any]:
        """One update from native inputs: (new params, loss, grad norm, final state)."""
        loss, h_last, grads = self.value_and_grad(self._loss_fn(X, Y, h0), params)
        new_params, norm = cells.clip_and_sgd(self.ops, params, grads, lr, max_norm)
        return new_params, loss, norm, h_last

    def _detach(self, x: Any) -> Any:
        return x

    def _inference(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which no autodiff graph is recorded."""
        return contextlib.nullcontext()

    # --- public API: NumPy in, NumPy out ----------------------------------------------------------

    def prepare(self, params: Params) -> dict[str, Any]:
        """Canonical NumPy parameters -> native parameters (kept native across train steps)."""
        return {k: self.asarray(np.asarray(v, dtype=self.dtype)) for k, v in params.items()}

    def export(self, params: dict[str, Any]) -> Params:
        """Native parameters -> canonical NumPy parameters."""
        return {k: self.to_numpy(v) for k, v in params.items()}

    def _native(self, params: Any) -> dict[str, Any]:
        first = next(iter(params.values()))
        return self.prepare(params) if isinstance(first, np.ndarray) else params

    def _ids(self, X: np.ndarray) -> Any:
        return self.asarray(np.asarray(X, dtype=np.int64))

    def forward(
        self, params: Params, X: np.ndarray, state: State | None = None
    ) -> tuple[np.ndarray, State]:
        """Logits (B, T, V) for int ids ``X`` (B, T), and the final state: ``(h,)`` (``(h, c)``
        for the lstm), each (num_layers * num_directions, B, H)."""
        native = self._native(params)
        with self._inference():
            logits, h_last = self.logits(native, self._ids(X), self._h0(native, state, X.shape[0]))
        return self.to_numpy(logits), self._public_state(native, h_last)

    def loss(
        self, params: Any, X: np.ndarray, Y: np.ndarray, state: Any = None
    ) -> tuple[float, Any]:
        """Mean cross-entropy of a batch without gradients; returns (loss, native final state)."""
        native = self._native(params)
        h0 = self._h0(native, state, X.shape[0])
        with self._inference():
            value, h_last = self._loss_fn(self._ids(X), self._ids(Y), h0)(native)
        return float(self.to_numpy(value)), (self._detach(h_last),)

    def loss_and_grads(
        self, params: Params, X: np.ndarray, Y: np.ndarray, state: State | None = None
    ) -> tuple[float, Params]:
        """Mean cross-entropy over all B*T tokens and its gradient for every parameter."""
        native = self._native(params)
        h0 = self._h0(native, state, X.shape[0])
        value, _, grads = self.value_and_grad(self._loss_fn(self._ids(X), self._ids(Y), h0), native)
        return float(self.to_numpy(value)), self.export(grads)

    def train_step(
        self,
        params: Any,
        X: np.ndarray,
        Y: np.ndarray,
        state: Any = None,
        *,
        lr: float,
        grad_clip: float,
    ) -> StepResult:
        """One SGD step with global-norm clipping (``grad_clip`` 0 disables it)."""
        native = self._native(params)
        h0 = self._h0(native, state, X.shape[0])
        new, loss, norm, h_last = self._step(native, self._ids(X), self._ids(Y), h0, lr, grad_clip)
        return StepResult(
            params=new,
            loss=float(self.to_numpy(loss)),
            grad_norm=float(self.to_numpy(norm)),
            state=(self._detach(h_last),),
        )

    def concat_trick(
        self, X: np.ndarray, W_xh: np.ndarray, H: np.ndarray, W_hh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both sides of X W_xh + H W_hh == [X, H] [W_xh; W_hh], computed by this framework."""
        left, right = cells.concat_trick(
            self.ops, *(self.asarray(np.asarray(a, dtype=self.dtype)) for a in (X, W_xh, H, W_hh))
        )
        return self.to_numpy(left), self.to_numpy(right)
