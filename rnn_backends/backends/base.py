"""The thin interface every framework implements, and everything the frameworks share.

An adapter (``<framework>_backend.py``) supplies only what differs between frameworks, in these
sections and this order, with its array functions beside it in ``<framework>_ops.py``:

1. arrays and device: the GPU probe, device placement and matmul precision, NumPy <-> tensors;
2. ops: its :class:`cells.Ops` and :class:`fastpath.FastOps`;
3. time loop: ``scan`` (a Python loop by default);
4. autodiff: ``value_and_grad``, ``_detach`` and ``_inference``;
5. native layer: the framework's own recurrent layer loaded with the canonical weights;
6. compilation: ``_compile`` (nothing by default) and ``_device_scope``.

Written once here: the options, the model read off the parameter names (``params.infer_model``),
the state layout, the pure functions ``_forward``, ``_loss`` and ``_step`` of tensors, the fast
step's fallback, and the public API. That speaks NumPy: ``forward``, ``loss``, ``loss_and_grads``
and ``concat_trick`` take and return NumPy arrays; ``train_step`` keeps the parameters as tensors
between steps (convert with ``prepare`` and ``export``). Every public call runs inside
``_device_scope()``.

The GRU's reset convention, which the weights cannot show, is fixed when the backend is made
(``gru_reset_after``). Inside, the recurrent state travels as one tensor, the *carry*: (B, H) when
the model has a single state tensor (a one-layer one-direction rnn or gru, as the fast step
expects), else (S * L * D, B, H): the public state's S tensors of (L * D, B, H) one after the other.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from .. import cells, fastpath, optim
from ..config import CELL_SPECS, ModelConfig
from ..errors import BackendUnavailableError, ConfigError
from ..params import infer_model

Params = dict[str, np.ndarray]
Tensors = dict[str, Any]
State = tuple[np.ndarray, ...]
"""A recurrent state: a tuple of (num_layers * num_directions, B, H) arrays, layer-major as
torch's ``h_n``: ``(h,)`` for the rnn and gru, ``(h, c)`` for the lstm."""

DTYPES = ("float32", "float64")
VARIANTS = ("textbook", "concat", "fast", "native")
DEVICE_KINDS = ("cpu", "gpu", "tpu")
# Accepted spellings of a device kind; "cuda" is a GPU (PyTorch's name for it).
_DEVICE_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "tpu": "tpu"}


@dataclass(frozen=True)
class Device:
    """A parsed device label: its kind (``cpu``, ``gpu`` or ``tpu``) and index (None: the first
    one, or the default choice when the kind is None too)."""

    kind: str | None
    index: int | None = None

    def __str__(self) -> str:
        if self.kind is None:
            return "default"
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(label: str | None) -> Device:
    """``None`` (a GPU if the framework sees one, else the CPU), ``cpu``, ``gpu`` or ``cuda``,
    ``tpu``, each optionally with an index (``gpu:1``, ``cuda:0``, ``tpu:0``). Every place that
    takes a device (``get_backend``, the CLI's ``--device``, the compare spec, bench, the tests'
    ``--device``) reads it here; an adapter maps the result to its framework's device.

    Raises:
        ConfigError: an unknown label, or a bad index (the message lists what is accepted).
    """
    if label is None:
        return Device(None)
    text = str(label).strip().lower()
    kind, sep, index = text.partition(":")
    if kind not in _DEVICE_ALIASES or (sep and not index.isdigit()):
        raise ConfigError(
            f"device must be cpu, gpu (or cuda), tpu, optionally with an index such as gpu:1; "
            f"got {label!r}"
        )
    if kind == "cpu" and sep and int(index) != 0:
        raise ConfigError(f"there is one CPU device, cpu (or cpu:0); got {label!r}")
    return Device(_DEVICE_ALIASES[kind], int(index) if sep and kind != "cpu" else None)


@dataclass
class StepResult:
    """What :meth:`Backend.train_step` returns."""

    params: Tensors  # the updated parameters as tensors, to pass to the next step
    loss: float  # mean cross-entropy of the batch, before the update
    grad_norm: float  # global gradient norm before clipping
    state: Any  # the final state as tensors, detached: feed it to the next batch to carry it
    opt_state: optim.OptState | None = None  # the optimizer's state as tensors, for the next step


class Trainable(Protocol):
    """What ``train``, ``evaluate`` and the run checkpoint call on a backend: a :class:`Backend`,
    or a wrapper that forwards the rest to one (``shadow.Recorder``, ``ensemble.Member``)."""

    @property
    def name(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...

    def version(self) -> str: ...
    def to_numpy(self, x: Any) -> np.ndarray: ...
    def asarray(self, x: np.ndarray) -> Any: ...
    def prepare(self, params: Params) -> Tensors: ...
    def export(self, tensors: Tensors) -> Params: ...
    def init_opt_state(
        self, optimizer: optim.Optimizer | str | None, params: Params | Tensors
    ) -> optim.OptState: ...
    def prepare_opt_state(self, opt_state: optim.OptState) -> optim.OptState: ...
    def export_opt_state(self, opt_state: optim.OptState) -> optim.OptState: ...
    def loss(
        self, params: Params | Tensors, X: np.ndarray, Y: np.ndarray, state: Any = None
    ) -> tuple[float, Any]: ...
    def train_step(
        self,
        params: Params | Tensors,
        X: np.ndarray,
        Y: np.ndarray,
        state: Any = None,
        *,
        lr: float,
        grad_clip: float,
        optimizer: optim.Optimizer | str | None = None,
        opt_state: optim.OptState | None = None,
    ) -> StepResult: ...


@dataclass(frozen=True)
class Option:
    """A backend-specific option of ``get_backend``: its default and the values it takes."""

    default: Any
    check: Callable[[Any], bool]
    need: str  # what ``check`` accepts, for the error message


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def clip_threshold(grad_clip: float) -> float:
    """``train_step``'s ``grad_clip`` as the ``max_norm`` of :func:`optim.update`: 0 (no
    clipping) becomes ``inf``, so the clip needs no branch."""
    ok = isinstance(grad_clip, (int, float)) and not isinstance(grad_clip, bool)
    if not ok or not grad_clip >= 0:
        raise ConfigError(f"grad_clip must be a number >= 0 (0: no clipping), got {grad_clip!r}")
    return math.inf if grad_clip == 0 else float(grad_clip)


class Backend(abc.ABC):
    """One framework's implementation of the char-level RNN language model.

    Arguments:
        dtype: ``"float64"`` or ``"float32"``.
        device: ``"cpu"``, ``"gpu"`` or ``None`` (a GPU when one is present).
        variant: ``"textbook"``, ``"concat"``, ``"fast"`` or ``"native"`` (the framework's own
            recurrent layer), all computing the same numbers.
        gru_reset_after: the GRU convention (``ModelConfig.gru_reset_after``): the reset gate
            after the recurrent matmul (cuDNN's) or before it (the book's scratch GRU).
        strict: never fall back: where the ``fast`` variant's hand-written step does not cover
            the model, raise :class:`ConfigError` instead of running the generic step (so that a
            run labelled "fast" cannot time anything else). Other variants have no fallback.
        options: the backend's own options (:attr:`options`), e.g. ``unroll`` for JAX.
    """

    name: ClassVar[str]
    framework: ClassVar[str]  # the module whose ``__version__`` is the framework's version
    variants: ClassVar[tuple[str, ...]] = VARIANTS
    default_variant: ClassVar[str] = "fast"
    options: ClassVar[dict[str, Option]] = {}
    companions: ClassVar[tuple[str, ...]] = ()  # optional modules whose versions matter too
    cpu_only: ClassVar[bool] = False
    gpu_hint: ClassVar[str] = "drop --device"  # what to do when a GPU is asked for but missing

    def __init__(
        self,
        dtype: str = "float64",
        device: str | None = None,
        variant: str | None = None,
        gru_reset_after: bool = True,
        strict: bool = False,
        **options: Any,
    ) -> None:
        variant = variant or self.default_variant
        if dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
        if variant not in self.variants:
            raise ConfigError(
                f"backend {self.name!r} has no variant {variant!r}; choose one of "
                f"{', '.join(self.variants)}"
            )
        parsed = parse_device(device)
        for flag, value in (("gru_reset_after", gru_reset_after), ("strict", strict)):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be True or False, got {value!r}")
        self.dtype, self.variant = dtype, variant
        self.gru_reset_after, self.strict = gru_reset_after, strict
        self._set_options(options)
        self._cache: dict[Hashable, Any] = {}
        self.tensor_dtype = self._tensor_dtype()
        self.device = self._choose_device(parsed)
        self.ops = self._make_ops()

    def _set_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(("gru_reset_after", "strict", *self.options))
            raise ConfigError(
                f"backend {self.name!r} has no option {', '.join(map(repr, unknown))}; "
                f"it accepts {accepted}"
            )
        for key, option in self.options.items():
            value = options.get(key, option.default)
            if not option.check(value):
                raise ConfigError(
                    f"backend {self.name!r}: option {key} must be {option.need}, got {value!r}"
                )
            setattr(self, key, value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dtype} {self.variant} on {self.device}>"

    def version(self) -> str:
        """The framework's version, and its companions' where installed (e.g. Flax for JAX)."""
        import importlib

        text = str(importlib.import_module(self.framework).__version__)
        extra = []
        for name in self.companions:
            try:
                extra.append(f"{name} {importlib.import_module(name).__version__}")
            except ImportError:
                pass
        return f"{text} ({', '.join(extra)})" if extra else text

    def _cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, made once per ``key``: compiled functions, native layers, models."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # --- 1. arrays and device (adapters) ----------------------------------------------------------

    def _gpu_count(self) -> int:
        """How many GPUs the framework sees here."""
        return 0

    @abc.abstractmethod
    def _place(self, gpu: bool) -> str:
        """Use GPU number ``self.device_index`` or the CPU, set full float32 matmul precision
        (no TF32); describe the device."""

    def _tensor_dtype(self) -> Any:
        """The framework's float dtype for ``self.dtype`` (``self.tensor_dtype``)."""
        return self.dtype

    @abc.abstractmethod
    def _to_tensor(self, x: np.ndarray) -> Any:
        """A tensor on this backend's device holding ``x`` (float ``self.dtype``, or int64)."""

    @abc.abstractmethod
    def to_numpy(self, x: Any) -> np.ndarray: ...

    def _tpu_count(self) -> int:
        """How many TPUs the framework sees here (only JAX runs on TPUs)."""
        return 0

    def _place_tpu(self) -> str:
        raise BackendUnavailableError(f"the {self.name} backend does not run on TPUs")

    def _choose_device(self, device: Device) -> str:
        """Check the device is present, then place the backend there (the adapter's ``_place``
        reads ``self.device_index``). An absent device is a :class:`BackendUnavailableError`
        that says which device, what is present and what to do."""
        if self.cpu_only and device.kind in ("gpu", "tpu"):
            raise ConfigError(f"the {self.name} backend runs on the CPU only; drop --device")
        gpus = self._gpu_count()
        kind = device.kind or ("gpu" if gpus > 0 else "cpu")
        self.device_index = device.index or 0
        if kind == "cpu":
            return self._place(False)
        if kind == "gpu":
            count, hint = gpus, self.gpu_hint
        else:
            count, hint = self._tpu_count(), "run on a TPU host with jax[tpu], or drop --device"
        if self.device_index >= count:
            present = ", ".join(f"{kind}:{i}" for i in range(count)) or f"no {kind.upper()}"
            raise BackendUnavailableError(
                f"device {str(device) if device.kind else kind!r} asked for, but {self.framework} "
                f"sees {present}; {hint}"
            )
        return self._place(True) if kind == "gpu" else self._place_tpu()

    def asarray(self, x: np.ndarray) -> Any:
        """A tensor on this backend's device; floats become ``self.dtype``, ints stay ints."""
        x = np.asarray(x)
        x = x.astype(np.int64 if x.dtype.kind in "iub" else self.dtype, copy=False)
        with self._device_scope():
            return self._to_tensor(x)

    # --- 2. ops (adapters) ------------------------------------------------------------------------

    @abc.abstractmethod
    def _make_ops(self) -> cells.Ops: ...

    def _make_fast_ops(self) -> fastpath.FastOps:
        raise NotImplementedError(f"backend {self.name!r} has no fast step")

    # --- 3. time loop -----------------------------------------------------------------------------

    def scan(self, step: Callable, carry: Any, xs: Any) -> tuple[Any, Any]:
        """``carry, y = step(carry, xs[t])`` for every t; returns the last carry and stacked ys."""
        ys = []
        for t in range(xs.shape[0]):
            carry, y = step(carry, xs[t])
            ys.append(y)
        return carry, self.ops.stack(ys)

    # --- 4. autodiff (adapters) -------------------------------------------------------------------

    @abc.abstractmethod
    def value_and_grad(
        self, fn: Callable[..., tuple[Any, Any]], params: Tensors, *args: Any
    ) -> tuple[Any, Any, Tensors]:
        """``(value, aux, grads)`` of ``fn(params, *args) -> (scalar, aux)`` with respect to
        ``params`` alone; ``aux`` is not differentiated."""

    def _detach(self, x: Any) -> Any:
        return x

    def _inference(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which no autodiff graph is recorded."""
        return contextlib.nullcontext()

    # --- 5. native layer (adapters) ---------------------------------------------------------------

    def _native_forward(self, params: Tensors, X: Any, h0: Any) -> tuple[Any, Any]:
        """Logits (B, T, V) and final carry through the framework's own recurrent layer."""
        raise NotImplementedError(f"backend {self.name!r} has no native layer")

    def _refuse_reset_before(self, model: ModelConfig, layer: str) -> None:
        if model.cell == "gru" and not model.gru_reset_after:
            raise ConfigError(
                f"{layer} computes the GRU with the reset gate after the recurrent matmul only; "
                f"the reset-before GRU (gru_reset_after=False, the book's scratch GRU) cannot be "
                f"loaded into it exactly. Use variant 'fast', 'concat' or 'textbook' of backend "
                f"{self.name!r}, or gru_reset_after=True"
            )

    def _carry_parts(self, model: ModelConfig, carry: Any) -> list[Any]:
        """The carry as one (B, H) tensor per state tensor, layer and direction."""
        n = _carry_count(model)
        return [carry] if n == 1 else [carry[k] for k in range(n)]

    def _join_carry(self, parts: list[Any]) -> Any:
        return parts[0] if len(parts) == 1 else self.ops.stack(parts)

    # --- 6. compilation (adapters) ----------------------------------------------------------------

    def _compile(self, kind: str, fn: Callable) -> Callable:
        """``fn`` (the pure ``_forward``, ``_loss``, ``_eval_loss`` or ``_step``, named by
        ``kind``: ``forward``, ``loss``, ``eval_loss``, ``step``) compiled by the framework;
        called once per kind and option values. Nothing is compiled by default."""
        return fn

    def _device_scope(self) -> contextlib.AbstractContextManager[Any]:
        """Context that places the tensors and ops made inside on this backend's device."""
        return contextlib.nullcontext()

    def _scalar(self, x: float) -> Any:
        """A Python number as an argument of a compiled step (one that does not recompile)."""
        return x

    # --- the model, written once over the hooks: pure functions of tensors ------------------------

    def model(self, params: Tensors) -> ModelConfig:
        """The model ``params`` describe (cell, layers, directions) with this GRU convention."""
        key = ("model", *((k, tuple(v.shape)) for k, v in params.items()))
        return self._cached(key, lambda: infer_model(params, self.gru_reset_after))

    def _forward(self, params: Tensors, X: Any, h0: Any) -> tuple[Any, Any]:
        """Logits (B, T, V) and the final carry for int ids ``X`` (B, T) from the carry ``h0``."""
        if self.variant == "native":
            return self._native_forward(params, X, h0)
        model = self.model(params)
        logits, final = cells.model_logits(
            self.ops, self.scan, params, X, tuple(self._carry_parts(model, h0)), model,
            self.variant,
        )
        return logits, self._join_carry(list(final))

    def _loss(self, params: Tensors, X: Any, Y: Any, h0: Any) -> tuple[Any, Any]:
        """(mean cross-entropy over all B*T tokens, final carry)."""
        logits, carry = self._forward(params, X, h0)
        return cells.cross_entropy(self.ops, logits, Y), carry

    def _grads(self, params: Tensors, X: Any, Y: Any, h0: Any) -> tuple[Any, Any, Tensors]:
        """(loss, final carry, gradients) for a training step.

        The ``fast`` variant runs the hand-written backward of :mod:`rnn_backends.fastpath` where
        it covers the model; where it raises :class:`NotImplementedError` (before running any op,
        so also inside a trace) autodiff runs instead, unless the backend is ``strict``.
        """
        if self.variant == "fast":
            try:
                with self._inference():
                    loss, grads, carry = fastpath.loss_and_grads(
                        self._make_fast_ops(), params, X, Y, h0
                    )
                return loss, carry, grads
            except NotImplementedError as exc:
                self._refuse_fallback(exc)
        return self.value_and_grad(self._loss, params, X, Y, h0)

    def _step(
        self,
        params: Tensors,
        X: Any,
        Y: Any,
        h0: Any,
        slots: optim.Slots,
        rates: optim.Rates,
        max_norm: Any,
        *,
        optimizer: optim.Optimizer,
    ) -> tuple[Tensors, optim.Slots, Any, Any, Any]:
        """One training step: (new params, new optimizer slots, loss, grad norm, final carry).

        ``optimizer`` is static (bound before compiling); everything else is a traced input. The
        update is :func:`optim.update` for the fast and the generic step alike.
        """
        loss, carry, grads = self._grads(params, X, Y, h0)
        with self._inference():
            new_params, new_slots, norm = optim.update(
                self.ops, optimizer, params, grads, slots, rates, max_norm
            )
        return new_params, new_slots, loss, norm, carry

    def _eval_loss(self, params: Tensors, X: Any, Y: Any, h0: Any) -> tuple[Any, Any]:
        """``_loss`` for evaluation, where no gradient is taken: the ``fast`` variant runs the
        fast step's forward pass (:func:`fastpath.loss`) where it covers the model."""
        if self.variant == "fast":
            try:
                return fastpath.loss(self._make_fast_ops(), params, X, Y, h0)
            except NotImplementedError as exc:
                self._refuse_fallback(exc)
        return self._loss(params, X, Y, h0)

    def _refuse_fallback(self, exc: NotImplementedError) -> None:
        """Raise :class:`ConfigError` for a ``strict`` backend whose fast path refused ``exc``."""
        if self.strict:
            raise ConfigError(
                f"backend {self.name!r} was made with strict=True and does not fall back from "
                f"the fast step: {exc}; make it with strict=False to run the generic step for "
                "this model"
            ) from None

    def _zeros_state(self, params: Tensors, batch: int) -> Any:
        """A zero carry: (B, H), or (S * L * D, B, H) for models with several state tensors."""
        model = self.model(params)
        n = _carry_count(model)
        shape = (batch, model.hidden_size) if n == 1 else (n, batch, model.hidden_size)
        return self.asarray(np.zeros(shape, dtype=self.dtype))

    def _h0(self, params: Tensors, state: Any, batch: int) -> Any:
        """The carry from a public state (a tuple of NumPy (L * D, B, H) arrays) or from one
        that ``train_step`` or ``loss`` returned (a 1-tuple of the carry as a tensor)."""
        if state is None:
            return self._zeros_state(params, batch)
        if not isinstance(state[0], np.ndarray):
            return state[0]
        model = self.model(params)
        names = CELL_SPECS[model.cell].states
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

    def _public_state(self, params: Tensors, carry: Any) -> State:
        """The carry as the public tuple of (L * D, B, H) NumPy arrays."""
        model = self.model(params)
        c = self.to_numpy(carry)
        n = len(CELL_SPECS[model.cell].states)
        c = c.reshape(n, model.num_layers * model.num_directions, *c.shape[-2:])
        return tuple(c[j] for j in range(n))

    def _compiled(self, kind: str, fn: Callable, *static: Hashable) -> Callable:
        """``_compile(kind, fn)``, cached per kind, the current option values and ``static``
        (what ``fn`` closes over, e.g. the step's optimizer)."""
        key = (kind, *static, *(getattr(self, name) for name in self.options))
        return self._cached(key, lambda: self._compile(kind, fn))

    def _inputs(
        self, params: Params | Tensors, X: np.ndarray, Y: np.ndarray | None, state: Any
    ) -> tuple[Tensors, Any, Any, Any]:
        """Parameters, ids and initial carry as tensors (``Y`` None stays None)."""
        tensors = self._as_tensors(params)
        h0 = self._h0(tensors, state, X.shape[0])
        return tensors, self._ids(X), None if Y is None else self._ids(Y), h0

    def _as_tensors(self, params: Params | Tensors) -> Tensors:
        first = next(iter(params.values()))
        return self.prepare(params) if isinstance(first, np.ndarray) else params

    def _ids(self, X: np.ndarray) -> Any:
        return self.asarray(np.asarray(X, dtype=np.int64))

    # --- public API: NumPy in, NumPy out ----------------------------------------------------------

    def prepare(self, params: Params) -> Tensors:
        """Canonical NumPy parameters -> tensors (kept as tensors across train steps)."""
        return {k: self.asarray(np.asarray(v, dtype=self.dtype)) for k, v in params.items()}

    def export(self, tensors: Tensors) -> Params:
        """Tensors -> canonical NumPy parameters."""
        return {k: self.to_numpy(v) for k, v in tensors.items()}

    def init_opt_state(
        self, optimizer: optim.Optimizer | str | None, params: Params | Tensors
    ) -> optim.OptState:
        """The state of ``optimizer`` before its first update: step 0 and zero slots, each the
        shape of its parameter, as tensors."""
        opt = optim.as_optimizer(optimizer)
        shapes = {k: tuple(v.shape) for k, v in params.items()}
        zeros = {s: {k: np.zeros(shape, dtype=self.dtype) for k, shape in shapes.items()}
                 for s in opt.slots}  # fmt: skip
        return self.prepare_opt_state(optim.OptState(0, zeros))

    def prepare_opt_state(self, opt_state: optim.OptState) -> optim.OptState:
        """An optimizer state with NumPy slots (from a checkpoint) -> tensors; tensors stay."""
        return opt_state.map(
            lambda a: self.asarray(np.asarray(a, dtype=self.dtype)) if isinstance(a, np.ndarray)
            else a
        )

    def export_opt_state(self, opt_state: optim.OptState) -> optim.OptState:
        """An optimizer state's tensors -> NumPy arrays (for a checkpoint)."""
        return opt_state.map(self.to_numpy)

    def forward(
        self, params: Params, X: np.ndarray, state: State | None = None
    ) -> tuple[np.ndarray, State]:
        """Logits (B, T, V) for int ids ``X`` (B, T), and the final state: ``(h,)`` (``(h, c)``
        for the lstm), each (num_layers * num_directions, B, H)."""
        with self._device_scope():
            tensors, X_, _, h0 = self._inputs(params, X, None, state)
            with self._inference():
                logits, carry = self._compiled("forward", self._forward)(tensors, X_, h0)
            return self.to_numpy(logits), self._public_state(tensors, carry)

    def loss(
        self, params: Params | Tensors, X: np.ndarray, Y: np.ndarray, state: Any = None
    ) -> tuple[float, Any]:
        """Mean cross-entropy of a batch without gradients; returns (loss, final state as
        tensors, to pass on as ``state``)."""
        with self._device_scope():
            tensors, X_, Y_, h0 = self._inputs(params, X, Y, state)
            with self._inference():
                value, carry = self._compiled("eval_loss", self._eval_loss)(tensors, X_, Y_, h0)
            return float(self.to_numpy(value)), (self._detach(carry),)

    def loss_and_grads(
        self, params: Params, X: np.ndarray, Y: np.ndarray, state: State | None = None
    ) -> tuple[float, Params]:
        """Mean cross-entropy over all B*T tokens and its gradient for every parameter."""
        with self._device_scope():
            tensors, X_, Y_, h0 = self._inputs(params, X, Y, state)
            loss = self._compiled("loss", self._loss)
            value, _, grads = self.value_and_grad(loss, tensors, X_, Y_, h0)
            return float(self.to_numpy(value)), self.export(grads)

    def train_step(
        self,
        params: Params | Tensors,
        X: np.ndarray,
        Y: np.ndarray,
        state: Any = None,
        *,
        lr: float,
        grad_clip: float,
        optimizer: optim.Optimizer | str | None = None,
        opt_state: optim.OptState | None = None,
    ) -> StepResult:
        """One training step: global-norm clipping at ``grad_clip`` (0: no clipping), then one
        update of ``optimizer`` at learning rate ``lr``.

        Arguments:
            optimizer: an :class:`optim.Optimizer`, a kind (``"adam"``) with its defaults, or None
                for plain SGD (the book's).
            opt_state: the ``opt_state`` of the previous step's result (NumPy slots are taken too,
                e.g. from a checkpoint); None starts the optimizer afresh (step 0, zero slots).
        Returns:
            a :class:`StepResult` whose ``params``, ``state`` and ``opt_state`` are tensors to
            pass to the next step.
        """
        max_norm = clip_threshold(grad_clip)
        opt = optim.as_optimizer(optimizer)
        with self._device_scope():
            tensors, X_, Y_, h0 = self._inputs(params, X, Y, state)
            if opt_state is None:
                opt_state = self.init_opt_state(opt, tensors)
            opt_state.check(opt, {k: tuple(v.shape) for k, v in tensors.items()})
            slots = self.prepare_opt_state(opt_state).slots
            rates = optim.Rates(*map(self._scalar, optim.step_rates(opt, opt_state.step, lr)))
            step = self._compiled("step", functools.partial(self._step, optimizer=opt), opt)
            new, new_slots, loss, norm, carry = step(
                tensors, X_, Y_, h0, slots, rates, self._scalar(max_norm)
            )
            return StepResult(
                params=new,
                loss=float(self.to_numpy(loss)),
                grad_norm=float(self.to_numpy(norm)),
                state=(self._detach(carry),),
                opt_state=optim.OptState(opt_state.step + 1, new_slots),
            )

    def concat_trick(
        self, X: np.ndarray, W_xh: np.ndarray, H: np.ndarray, W_hh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both sides of X W_xh + H W_hh == [X, H] [W_xh; W_hh], computed by this framework."""
        with self._device_scope():
            tensors = (self.asarray(np.asarray(a, dtype=self.dtype)) for a in (X, W_xh, H, W_hh))
            left, right = cells.concat_trick(self.ops, *tensors)
            return self.to_numpy(left), self.to_numpy(right)


def _carry_count(model: ModelConfig) -> int:
    """How many (B, H) tensors the carry holds: state tensors x layers x directions."""
    return len(CELL_SPECS[model.cell].states) * model.num_layers * model.num_directions

