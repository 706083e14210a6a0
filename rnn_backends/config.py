"""Frozen, validated configuration objects.

Defaults are the textbook's char-level RNN language model: 32 hidden units, batch 1024, 32 time
steps, learning rate 1, gradient clipping at global norm 1, weights drawn from N(0, 0.01^2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule, check_hyper, check_schedule
from .parallel.rows import shard_rows


@dataclass(frozen=True)
class CellSpec:
    """One recurrent cell: its gates, its state, and how each framework's native layer lays the
    gates out. Everything that needs these facts (params, cells, the adapters) reads them here.

    Shapes, for input width I (V for layer 0), hidden size H, batch B, L layers, D directions:
    every gate ``g`` has ``W_x<g>`` (I, H), ``W_h<g>`` (H, H) and ``b_<g>`` (H,); every state
    tensor is (L * D, B, H).

    Attributes:
        name: ``"rnn"``, ``"gru"`` or ``"lstm"``.
        gates: the book's gate letters in the book's order (the order of the parameters).
        states: the state tensors in the order of the public state tuple.
        torch_gates: the order ``torch.nn.RNN/GRU/LSTM`` stacks the gates along the rows of
            ``weight_ih``/``weight_hh`` (cuDNN's layout), in the book's letters.
        gluon_gates: the same for Gluon's ``i2h``/``h2h`` weights.
        keras_gates: the order Keras 3 puts the gates side by side along the columns of
            ``kernel``/``recurrent_kernel``.
        flax_names: per gate in ``gates`` order, the suffix of Flax's Dense layers for it (``i``
            + suffix reads x, ``h`` + suffix reads h; the tanh cell's are plain ``i`` and ``h``).
        flax_bias: which of a gate's two Flax Dense layers carries its bias, ``"i"`` or ``"h"``.
    """

    name: str
    gates: tuple[str, ...]
    states: tuple[str, ...]
    torch_gates: tuple[str, ...]
    gluon_gates: tuple[str, ...]
    keras_gates: tuple[str, ...]
    flax_names: tuple[str, ...]
    flax_bias: str


CELL_SPECS: dict[str, CellSpec] = {
    s.name: s
    for s in (
        CellSpec("rnn", ("h",), ("h",), ("h",), ("h",), ("h",), ("",), "i"),
        # torch's and Gluon's GRU call the candidate "n", Flax's too; their LSTM calls it "g".
        CellSpec("gru", ("z", "r", "h"), ("h",), ("r", "z", "h"), ("r", "z", "h"),
                 ("z", "r", "h"), ("z", "r", "n"), "i"),
        CellSpec("lstm", ("i", "f", "o", "c"), ("h", "c"), ("i", "f", "c", "o"),
                 ("i", "f", "c", "o"), ("i", "f", "c", "o"), ("i", "f", "o", "g"), "h"),
    )
}
CELLS = tuple(CELL_SPECS)
# Views of CELL_SPECS by the names params.py reads.
CELL_GATES = {name: spec.gates for name, spec in CELL_SPECS.items()}
CELL_STATES = {name: spec.states for name, spec in CELL_SPECS.items()}
DTYPES = ("float32", "float64")
BATCHINGS = ("windows", "sequential")


def _positive_int(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _finite_positive(owner: str, name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        need = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ConfigError(f"{owner}.{name} must be {need}, got {value!r}")


def _choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {', '.join(choices)}; got {value!r}")


def _option(
    help: str,
    flag: str | None = None,
    choices: tuple[str, ...] | None = None,
    default_text: str | None = None,
) -> Any:
    """Field metadata that makes the field a command-line option (``cli.py`` reads it).

    ``flag`` is given where it differs from the field's name with dashes (``max_epochs`` is
    ``--epochs``); ``choices`` restricts the values the command line accepts; ``default_text``
    says what the default is where the field's value (None) does not.
    """
    return {"option": {"help": help, "flag": flag, "choices": choices,
                       "default_text": default_text}}  # fmt: skip


# How each cell trains when TrainConfig leaves the optimizer, lr, schedule or warmup_steps None.
# The tanh RNN keeps the book's plain SGD at lr 1 (its figures stay the textbook's); with it the
# gated cells stay at the unigram perplexity for hundreds of steps (their gates start saturated
# towards copying the state), so they take Adam, which scales each weight's step by its own
# gradient history. Measured in README.md ("Optimizers and schedules").
CELL_TRAINING: dict[str, dict[str, Any]] = {
    "rnn": {"optimizer": "sgd", "lr": 1.0, "schedule": "constant", "warmup_steps": 0},
    # 0.03: with the book's N(0, 0.01^2) weights a gated cell first sits at the unigram; at 0.01 a
    # two-layer GRU stayed there for 10 of 30 epochs and ended behind the tanh RNN (7.15 vs 6.46
    # on the embedded corpus), at 0.03 it leaves it within 3 (README, Optimizers and schedules).
    "gru": {"optimizer": "adam", "lr": 0.03, "schedule": "cosine", "warmup_steps": 10},
    "lstm": {"optimizer": "adam", "lr": 0.03, "schedule": "cosine", "warmup_steps": 10},
}
# The learning rate an optimizer takes when it is asked for by name but lr is left out.
OPTIMIZER_LR = {"sgd": 1.0, "momentum": 0.1, "nesterov": 0.1, "adam": 0.01, "adamw": 0.01}


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model.

    Arguments:
        vocab_size: number of tokens V (inputs are one-hot of width V, outputs are V logits).
        hidden_size: hidden units H.
        cell: recurrent cell: ``"rnn"`` (the textbook's tanh RNN), ``"gru"`` or ``"lstm"``.
        num_layers: stacked recurrent layers; layer k > 0 reads the outputs of layer k - 1.
        init_sigma: standard deviation of the normal weight init (biases start at zero).
        bidirectional: every layer also runs backwards in time; its outputs are the forward and
            backward states side by side (2H). Such a model sees the future, so it cannot be
            trained as a next-token language model (see :meth:`check_trainable`).
        gru_reset_after: GRU only. ``True`` applies the reset gate after the recurrent matmul,
            ``r * (h W_hh)``, as cuDNN, PyTorch, MXNet, Flax and Keras (``reset_after=True``)
            do; ``False`` applies it before, ``(r * h) W_hh``, as the book's scratch GRU does.
    """

    vocab_size: int
    hidden_size: int = field(default=32, metadata=_option("hidden units H"))
    cell: str = field(default="rnn", metadata=_option("recurrent cell", choices=CELLS))
    num_layers: int = field(default=1, metadata=_option("stacked recurrent layers"))
    init_sigma: float = 0.01
    bidirectional: bool = False
    gru_reset_after: bool = True

    def __post_init__(self) -> None:
        _positive_int("ModelConfig", "vocab_size", self.vocab_size)
        _positive_int("ModelConfig", "hidden_size", self.hidden_size)
        _positive_int("ModelConfig", "num_layers", self.num_layers)
        _choice("ModelConfig", "cell", self.cell, CELLS)
        _finite_positive("ModelConfig", "init_sigma", self.init_sigma)
        for name in ("bidirectional", "gru_reset_after"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"ModelConfig.{name} must be True or False, got {getattr(self, name)!r}"
                )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def check_trainable(self, backend: Any = None) -> None:
        """Raise :class:`ConfigError` unless this model can be trained as a language model
        (by ``backend``, when given).

        A bidirectional layer reads the whole sequence, later characters included, so its output
        at step t already knows the character it is asked to predict: training it on
        next-character prediction would learn to copy, not to model language. A GRU's reset
        convention is a property of the backend (the weights cannot show it), so a backend made
        for the other convention is refused too.
        """
        backend_after = getattr(backend, "gru_reset_after", self.gru_reset_after)
        if self.cell == "gru" and backend_after != self.gru_reset_after:
            raise ConfigError(
                f"the model's GRU applies the reset gate {self._reset_word(self.gru_reset_after)} "
                f"the recurrent matmul but the backend computes it "
                f"{self._reset_word(backend_after)}; make the backend with "
                f"get_backend(..., gru_reset_after={self.gru_reset_after})"
            )
        if self.bidirectional:
            raise ConfigError(
                "a bidirectional model cannot be trained as a next-character language model: "
                "its backward direction reads the characters it is asked to predict. Use "
                "bidirectional=False to train; forward passes and gradients of bidirectional "
                "models are available through the backends"
            )

    @staticmethod
    def _reset_word(after: bool) -> str:
        return "after" if after else "before"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Arguments:
        batch_size: sequences per minibatch B.
        num_steps: time steps per sequence T (the truncation length of BPTT).
        lr: the peak learning rate (the schedule's; after the warmup).
        max_epochs: passes over the training windows.
        grad_clip: global gradient norm threshold; 0 disables clipping. Clipping scales the raw
            gradients, before the optimizer sees them.
        seed: seeds the weight init, the shuffling and the sequential offset.
        dtype: ``"float32"`` or ``"float64"``.
        batching: ``"windows"`` (the textbook's stride-1 windows, shuffled, state reset per batch)
            or ``"sequential"`` (consecutive batches continue each other; the hidden state is
            carried across batches and detached: truncated BPTT).
        num_train: training windows; ``None``: the book's 10,000 for ``"windows"`` batching (or
            what the corpus has, if fewer), every window before the validation ones for
            ``"sequential"`` batching.
        num_val: validation windows after the training ones.
        num_test: test windows after the validation ones, with a gap of ``num_steps`` windows
            so that no test token is in any training or validation window. Nothing is chosen
            on them (no epoch, no discount, no order): they are scored once, at the end. 0
            leaves the test split out; ``None``: 5,000 where the corpus has room for them and
            the training split still gets ``num_train`` windows (or, left out, the book's 10,000
            with ``windows`` batching, one batch with ``sequential``), else 0 (see
            :attr:`CharBatches.num_test`).
        optimizer: ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"`` or ``"adamw"`` (see
            :mod:`rnn_backends.optim`).
        momentum: ``mu`` of momentum and nesterov.
        beta1, beta2, eps: Adam's (and AdamW's) moment decay rates and denominator guard.
        weight_decay: AdamW's decoupled weight decay (0 for the other optimizers).
        schedule: ``"constant"``, ``"step"`` or ``"cosine"`` (to 0 at the end of the run).
        warmup_steps: updates of linear warmup to ``lr`` before the schedule.
        lr_decay_steps, lr_decay_rate: the ``step`` schedule multiplies the rate by
            ``lr_decay_rate`` every ``lr_decay_steps`` updates after the warmup (None: a third
            of them).
        data_parallel: workers N that share every batch by rows (``batch_size`` must be a
            multiple of N), each through its framework's own engine; the update is the
            single-process one (:mod:`rnn_backends.parallel`).

    ``optimizer``, ``lr``, ``schedule`` and ``warmup_steps`` left None take the model's cell's
    defaults (:data:`CELL_TRAINING`); :meth:`resolved` fills them in, and :func:`train` records
    the resolved values in the history and the checkpoint. A ``lr`` left None with an
    optimizer other than the cell's takes that optimizer's (:data:`OPTIMIZER_LR`).
    """

    batch_size: int = field(default=1024, metadata=_option("sequences per minibatch B"))
    num_steps: int = field(default=32, metadata=_option("time steps per sequence T"))
    lr: float | None = field(
        default=None,
        metadata=_option("peak learning rate", default_text="per cell: 1 for rnn (SGD), 0.03 "
                         "for gru and lstm (Adam)"),
    )  # fmt: skip
    max_epochs: int = field(
        default=100, metadata=_option("passes over the training windows", flag="--epochs")
    )
    grad_clip: float = field(
        default=1.0, metadata=_option("global gradient norm threshold; 0 disables clipping")
    )
    seed: int = field(default=0, metadata=_option("seeds init, shuffling and offsets"))
    dtype: str = field(default="float32", metadata=_option("floating-point type", choices=DTYPES))
    batching: str = field(
        default="windows",
        metadata=_option("shuffled windows, or sequential (state carried)", choices=BATCHINGS),
    )
    num_train: int | None = field(
        default=None,
        metadata=_option("training windows", default_text="10000 with windows batching, the "
                         "whole training split with sequential"),
    )  # fmt: skip
    num_val: int = field(default=5000, metadata=_option("validation windows"))
    num_test: int | None = field(
        default=None,
        metadata=_option("test windows after the validation ones (scored once, at the end; 0: "
                         "none)", default_text="5000 where the corpus has room for them, else 0"),
    )  # fmt: skip
    optimizer: str | None = field(
        default=None,
        metadata=_option("optimizer", choices=OPTIMIZERS,
                         default_text="per cell: sgd for rnn, adam for gru and lstm"),
    )  # fmt: skip
    momentum: float = field(default=0.9, metadata=_option("momentum and nesterov: mu"))
    beta1: float = field(default=0.9, metadata=_option("adam and adamw: first-moment decay"))
    beta2: float = field(default=0.999, metadata=_option("adam and adamw: second-moment decay"))
    eps: float = field(default=1e-8, metadata=_option("adam and adamw: denominator guard"))
    weight_decay: float = field(
        default=0.0, metadata=_option("adamw: decoupled weight decay per unit learning rate")
    )
    schedule: str | None = field(
        default=None,
        metadata=_option("learning-rate schedule after the warmup", choices=SCHEDULES,
                         default_text="per cell: constant for rnn, cosine for gru and lstm"),
    )  # fmt: skip
    warmup_steps: int | None = field(
        default=None,
        metadata=_option("updates of linear learning-rate warmup",
                         default_text="per cell: 0 for rnn, 10 for gru and lstm"),
    )  # fmt: skip
    lr_decay_steps: int | None = field(
        default=None,
        metadata=_option("step schedule: decay every N updates",
                         default_text="a third of the updates after the warmup"),
    )  # fmt: skip
    lr_decay_rate: float = field(
        default=0.1, metadata=_option("step schedule: factor at each decay")
    )
    data_parallel: int = field(
        default=1,
        metadata=_option("data-parallel workers N, each taking batch_size / N rows of every "
                         "batch (README: Data parallelism)"),
    )  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_steps", "max_epochs"):
            _positive_int("TrainConfig", name, getattr(self, name))
        if self.lr is not None:
            _finite_positive("TrainConfig", "lr", self.lr)
        _finite_positive("TrainConfig", "grad_clip", self.grad_clip, allow_zero=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"TrainConfig.seed must be an integer >= 0, got {self.seed!r}")
        _choice("TrainConfig", "dtype", self.dtype, DTYPES)
        _choice("TrainConfig", "batching", self.batching, BATCHINGS)
        if self.num_train is not None:
            _positive_int("TrainConfig", "num_train", self.num_train)
        for name in ("num_val", "num_test"):
            value = getattr(self, name)
            if name == "num_test" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"TrainConfig.{name} must be an integer >= 0, got {value!r}")
        check_hyper("TrainConfig", self.optimizer, momentum=self.momentum, beta1=self.beta1,
                    beta2=self.beta2, eps=self.eps, weight_decay=self.weight_decay)  # fmt: skip
        check_schedule("TrainConfig", self.schedule, self.warmup_steps, self.lr_decay_steps,
                       self.lr_decay_rate)  # fmt: skip
        _positive_int("TrainConfig", "data_parallel", self.data_parallel)
        shard_rows(self.batch_size, self.data_parallel)  # a batch splits evenly, or a ConfigError

    def resolved(self, model: ModelConfig) -> TrainConfig:
        """This config with ``optimizer``, ``lr``, ``schedule`` and ``warmup_steps`` filled in
        from ``model``'s cell where they are None (see :data:`CELL_TRAINING`).

        Raises:
            ConfigError: a setting that fits only another optimizer (AdamW's weight decay).
        """
        cell = CELL_TRAINING[model.cell]
        optimizer = self.optimizer or cell["optimizer"]
        lr = self.lr
        if lr is None:
            lr = cell["lr"] if optimizer == cell["optimizer"] else OPTIMIZER_LR[optimizer]
        return dataclasses.replace(
            self,
            optimizer=optimizer,
            lr=lr,
            schedule=self.schedule or cell["schedule"],
            warmup_steps=cell["warmup_steps"] if self.warmup_steps is None else self.warmup_steps,
        )

    @property
    def is_resolved(self) -> bool:
        return None not in (self.optimizer, self.lr, self.schedule, self.warmup_steps)

    def _need_resolved(self, what: str) -> None:
        if not self.is_resolved:
            raise ConfigError(
                f"{what} needs the optimizer, lr, schedule and warmup_steps, which this config "
                "leaves to the cell; call config.resolved(model_config) first"
            )

    def optimizer_spec(self) -> Optimizer:
        """The static part of every step (:class:`optim.Optimizer`) of a resolved config."""
        self._need_resolved("optimizer_spec")
        return Optimizer(
            str(self.optimizer), momentum=self.momentum, beta1=self.beta1, beta2=self.beta2,
            eps=self.eps, weight_decay=self.weight_decay,
        )

    def schedule_spec(self, total_steps: int) -> Schedule:
        """The learning rate of every update (:class:`optim.Schedule`) of a resolved config,
        for a run of ``total_steps`` updates."""
        self._need_resolved("schedule_spec")
        return Schedule(str(self.schedule), int(self.warmup_steps or 0), total_steps,
                        self.lr_decay_steps, self.lr_decay_rate)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**_known_fields(cls, data))

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> TrainConfig:
        """:meth:`from_dict` for a config a checkpoint recorded. One saved before optimizers
        existed has no ``optimizer``: that run was plain SGD at a constant rate, whatever its
        cell, and it continues so. One saved before the test split existed has no
        ``num_test``: its training split ran up to its validation windows (the sequential
        default took every window before them), so it continues without a test split."""
        if "optimizer" not in data:
            data = {**data, "optimizer": "sgd", "schedule": "constant", "warmup_steps": 0}
        if "num_test" not in data:
            data = {**data, "num_test": 0}
        return cls.from_dict(data)


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return {k: v for k, v in data.items() if k in names}
