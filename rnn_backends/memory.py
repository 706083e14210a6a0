"""How much memory a model and one training step need, estimated before anything is allocated.

The estimate counts what any backend must hold at once during a step, in the run's float type:

* the parameters, their gradients and the updated copy the step returns (3 P), plus the
  optimizer's state (:data:`OPTIMIZER_SLOTS` per parameter; plain SGD keeps none);
* per layer and direction, the activations the backward pass reads: every gate's pre-activation
  and output, the state tensors and the layer's output, each B * T * H;
* the one-hot inputs of the first layer (the ``textbook`` variant's matmuls), B * T * V;
* the logits, their softmax and their gradient, 3 * B * T * V;
* the batch's int64 ids and, for ``windows`` batching, the epoch's int64 shuffling order.

Frameworks keep more (autodiff tapes, workspaces), so this is a floor: a run it refuses cannot
fit, and a run it admits may still need a few times more.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import CELL_GATES, CELL_STATES, ModelConfig, TrainConfig
from .errors import ConfigError

# Extra values an optimizer keeps per parameter value (momentum: 1, Adam: 2).
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}


def param_count(config: ModelConfig) -> tuple[int, int]:
    """(values, tensors) of the model's parameters, by arithmetic: the same totals as
    :func:`.params.param_shapes` without listing a name per tensor."""
    V, H, L, D = config.vocab_size, config.hidden_size, config.num_layers, config.num_directions
    G = len(CELL_GATES[config.cell])

    def layer(width: int) -> int:  # one direction of one layer: W_x*, W_h*, b_* per gate
        return G * (width * H + H * H + H)

    values = D * layer(V) + (L - 1) * D * layer(H * D) + H * D * V + V
    return values, 3 * G * L * D + 2


@dataclass(frozen=True)
class Estimate:
    """Bytes of each part of a training step (see the module docstring)."""

    parameters: int
    optimizer: int
    activations: int
    logits: int
    data: int

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.activations + self.logits + self.data


def estimate(model: ModelConfig, train: TrainConfig, num_train: int | None = None) -> Estimate:
    """The memory one training step of ``model`` under ``train`` needs at least, in bytes;
    ``num_train``: training windows of a ``windows`` epoch (for its shuffling order)."""
    item = 4 if train.dtype == "float32" else 8
    B, T, H, V = train.batch_size, train.num_steps, model.hidden_size, model.vocab_size
    G, S = len(CELL_GATES[model.cell]), len(CELL_STATES[model.cell])
    values, _ = param_count(model)
    slots = OPTIMIZER_SLOTS.get(getattr(train, "optimizer", "sgd"), 2)
    per_layer = (2 * G + S + 1) * B * T * H
    order = 8 * (num_train or 0) if train.batching == "windows" else 0
    return Estimate(
        parameters=3 * values * item,
        optimizer=slots * values * item,
        activations=(model.num_layers * model.num_directions * per_layer + B * T * V) * item,
        logits=3 * B * T * V * item,
        data=2 * 8 * B * T + order,
    )


def available_bytes() -> int | None:
    """Memory available to a new allocation here: ``MemAvailable`` on Linux, else the physical
    memory; None when neither can be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def check_fits(model: ModelConfig, train: TrainConfig, num_train: int | None = None) -> Estimate:
    """Refuse (:class:`ConfigError`, with the figures) a run whose :func:`estimate` exceeds the
    memory available, before anything of it is allocated. Returns the estimate."""
    need = estimate(model, train, num_train)
    have = available_bytes()
    if have is not None and need.total > have:
        raise ConfigError(
            f"the model and one training step need at least {_gb(need.total)} (parameters, "
            f"gradients and update {_gb(need.parameters)}, activations {_gb(need.activations)}, "
            f"logits {_gb(need.logits)}), but {_gb(have)} of memory is available; lower "
            "--hidden-size, --num-layers, --batch-size or --num-steps"
        )
    return need
