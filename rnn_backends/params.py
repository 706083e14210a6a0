"""Canonical parameters: names, shapes, seeded init and the check that weights fit a model.

Names and shapes follow the textbook (inputs multiply weights from the left, so ``W_xh`` is
(vocab, hidden)). Every backend starts from these NumPy arrays, so all frameworks share the same
initial weights bit for bit.

Naming, per layer and direction: each recurrent layer has, for every gate letter g of its cell
(``h`` for the RNN; ``z, r, h`` for the GRU; ``i, f, o, c`` for the LSTM), ``W_xg`` (input, H),
``W_hg`` (H, H) and ``b_g`` (H,). Layer 0's forward direction uses the bare book names
(``W_xh``, ``W_xz``, ...); layer k > 0 prefixes ``l<k>.``, the backward direction of a
bidirectional layer adds ``rev.``: ``W_xh``, ``rev.W_xh``, ``l1.W_xh``, ``l1.rev.W_xh``. The input
of layer 0 is the one-hot token (V); of a later layer the previous layer's output (H, or 2H
side by side forward then backward). The output layer is ``W_hq`` (H * directions, V) and ``b_q``.
"""

from __future__ import annotations

import numpy as np

from .config import CELL_GATES, ModelConfig
from .errors import CheckpointError, ConfigError

Params = dict[str, np.ndarray]


def layer_prefix(layer: int, direction: int = 0) -> str:
    """The name prefix of a layer's direction: ``""``, ``"rev."``, ``"l1."``, ``"l1.rev."``."""
    return (f"l{layer}." if layer else "") + ("rev." if direction else "")


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names and shapes, in a fixed order: layer by layer, the forward
    direction before the backward one, the book's gate order within, the output layer last."""
    V, H, D = config.vocab_size, config.hidden_size, config.num_directions
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(config.num_layers):
        width = V if layer == 0 else H * D
        for direction in range(D):
            pre = layer_prefix(layer, direction)
            for g in CELL_GATES[config.cell]:
                shapes[f"{pre}W_x{g}"] = (width, H)
                shapes[f"{pre}W_h{g}"] = (H, H)
                shapes[f"{pre}b_{g}"] = (H,)
    shapes["W_hq"] = (H * D, V)
    shapes["b_q"] = (V,)
    return shapes


def infer_model(params: Params, gru_reset_after: bool = True) -> ModelConfig:
    """The :class:`ModelConfig` whose :func:`param_shapes` ``params`` has (``init_sigma`` is
    left at its default). The GRU convention cannot be read off the weights, so it is passed in.

    Raises:
        ConfigError: the names fit no cell, depth and direction count.
    """
    names = set(params)
    cell = next((c for c in ("lstm", "gru") if f"W_x{CELL_GATES[c][0]}" in names), "rnn")
    if "W_hq" not in names or f"W_x{CELL_GATES[cell][0]}" not in names:
        raise ConfigError(
            f"parameters {sorted(names)[:6]}... are not a model of this package (need W_hq and "
            "the book's names, see rnn_backends.params)"
        )
    layers = 1
    while f"l{layers}.W_x{CELL_GATES[cell][0]}" in names:
        layers += 1
    H_out, V = params["W_hq"].shape
    H = params[f"W_h{CELL_GATES[cell][0]}"].shape[0]
    config = ModelConfig(
        vocab_size=int(V),
        hidden_size=int(H),
        cell=cell,
        num_layers=layers,
        bidirectional=f"rev.W_x{CELL_GATES[cell][0]}" in names,
        gru_reset_after=gru_reset_after,
    )
    expected = param_shapes(config)
    if set(expected) != names or any(
        tuple(params[k].shape) != shape for k, shape in expected.items()
    ):
        raise ConfigError(
            f"parameters do not form a {layers}-layer {cell} model (names or shapes differ from "
            f"params.param_shapes); got {sorted(names)}"
        )
    return config


def is_bias(name: str) -> bool:
    return name.split(".")[-1].startswith("b_")


def init_params(config: ModelConfig, seed: int = 0, dtype: str = "float64") -> Params:
    """Weights from N(0, init_sigma^2), biases zero, drawn in float64 then cast to ``dtype``.

    The draw order is the order of :func:`param_shapes`, from ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, shape in param_shapes(config).items():
        if is_bias(name):
            value = np.zeros(shape)
        else:
            value = rng.normal(0.0, config.init_sigma, size=shape)
        params[name] = value.astype(dtype)
    return params


def check_params(params: Params, config: ModelConfig) -> None:
    """Raise :class:`CheckpointError` unless ``params`` has exactly the names and shapes of
    ``config``."""
    expected = param_shapes(config)
    if set(params) != set(expected):
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        raise CheckpointError(
            f"parameters do not fit the model: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}"
        )
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise CheckpointError(
                f"parameter {name} has shape {tuple(params[name].shape)}, the model needs {shape}"
            )
