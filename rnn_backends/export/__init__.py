"""Take the weights away: a checkpoint as a framework's own model object or file.

- torch: ``to_torch`` returns an ``nn.Module``; the file is ``torch.save`` of its state dict,
  config and vocabulary.
- keras: ``to_keras`` returns a ``keras.Model``; the file is ``.keras``.
- flax: ``to_flax`` returns ``(module, {"params": ...})``; the file is msgpack of the params,
  config and vocabulary.
- gluon: ``to_gluon`` returns a ``HybridBlock``; the files are ``PREFIX-symbol.json`` and
  ``PREFIX-0000.params`` (``HybridBlock.export``).
- safetensors and npz: files under the book's names (``W_xh``, ..., ``l1.W_xh``, ``W_hq``, ``b_q``),
  written by this package alone.

:func:`save` (and ``rnn-backends export --checkpoint DIR --to TARGET --out PATH``) writes them.

Every model object takes int ids (B, T) and returns logits (B, T, V) and the final state, in the
checkpoint's dtype, and computes what the NumPy oracle computes. The reset-before GRU (the book's
scratch GRU) exists only in Keras among the frameworks' layers; torch, flax and gluon refuse it.
``load_torch``, ``load_keras``, ``load_flax`` and ``load_gluon`` read the files back.

Importing this package imports no framework; each target imports its own when first used.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from ..checkpointing import write_atomic
from ..errors import BackendUnavailableError, ConfigError
from ._files import npz_export, read_safetensors, safetensors_export
from ._source import Source, Weights, refuse_reset_before, resolve

__all__ = [
    "TARGETS", "Source", "Weights", "load_flax", "load_gluon", "load_keras", "load_torch",
    "read_safetensors", "resolve", "save", "to_flax", "to_gluon", "to_keras", "to_torch",
]  # fmt: skip


@dataclass(frozen=True)
class Target:
    """An export target: the private module that holds it and what it needs installed."""

    module: str | None  # None: written by this package alone
    needs: tuple[str, ...] = ()  # top-level modules that must import
    title: str = ""
    pip: str = ""  # what pip installs for it
    extra: str = ""  # this package's extra that installs it too
    suffixes: tuple[str, ...] = ("",)  # what each of its files adds to the output path
    gru_layer: str | None = None  # the GRU layer that cannot compute the reset-before GRU


_TARGETS = {
    "torch": Target("_torch", ("torch",), "PyTorch", "torch", "torch", gru_layer="torch.nn.GRU"),
    "keras": Target("_keras", ("tensorflow", "keras"), "TensorFlow with Keras 3", "tensorflow",
                    "tensorflow"),
    "flax": Target("_flax", ("jax", "flax"), "Flax", "flax", "jax", gru_layer="Flax's GRUCell"),
    "gluon": Target("_gluon", ("mxnet",), "MXNet 1.9.1", "mxnet==1.9.1 'numpy<1.24'", "mxnet",
                    ("-symbol.json", "-0000.params"), gru_layer="Gluon's rnn.GRU"),
    "safetensors": Target(None),
    "npz": Target(None),
}  # fmt: skip
TARGETS = tuple(_TARGETS)


def _weights(source: Source, target: str, gru_reset_after: bool | None) -> Weights:
    """The weights of ``source``, refused (before any framework is imported) when ``target``
    cannot hold their model."""
    weights = resolve(source, gru_reset_after)
    layer = _TARGETS[target].gru_layer
    if layer is not None:
        refuse_reset_before(weights, layer, target)
    return weights


def _framework(target: str) -> ModuleType:
    """The private module of ``target``, importing its framework.

    Raises:
        ConfigError: unknown target.
        BackendUnavailableError: the framework is not installed (the message says how to install
            it) or fails to import.
    """
    if target not in _TARGETS or _TARGETS[target].module is None:
        raise ConfigError(f"unknown export target {target!r}; choose one of {', '.join(TARGETS)}")
    spec = _TARGETS[target]
    hint = (
        f"pip install {spec.pip} (from a clone of rnn-backends: pip install -e '.[{spec.extra}]'),"
        " or run the export with the Python of an environment that has it"
    )
    missing = [m for m in spec.needs if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailableError(
            f"export to {target} needs {spec.title}, but {missing[0]} is not installed in this "
            f"environment; {hint}"
        )
    try:
        return importlib.import_module(f"{__name__}.{spec.module}")
    except (ImportError, AttributeError) as exc:  # MXNet on numpy>=1.24 fails on np.bool
        raise BackendUnavailableError(
            f"export to {target}: importing {spec.title} failed ({exc}); {hint}"
        ) from None


def to_torch(source: Source, *, gru_reset_after: bool | None = None) -> Any:
    """A ``torch.nn.Module`` (``CharRNN``: ``nn.RNN``/``GRU``/``LSTM`` + ``nn.Linear``) holding
    the weights of ``source``, in evaluation mode; ``module(ids)`` returns logits (B, T, V) and
    h (L * D, B, H), or (h, c) for the LSTM. ``gru_reset_after`` only for bare parameters."""
    weights = _weights(source, "torch", gru_reset_after)  # refused before the import
    return _framework("torch").build(weights)


def to_keras(
    source: Source, *, state_input: bool = False, gru_reset_after: bool | None = None
) -> Any:
    """A ``keras.Model`` holding the weights of ``source``: input ``"ids"`` (B, T) (and, with
    ``state_input``, ``"h"``/``"c"`` (B, L * D, H)); outputs ``"logits"``, ``"h"`` (, ``"c"``)."""
    weights = _weights(source, "keras", gru_reset_after)
    return _framework("keras").build(weights, state_input)


def to_flax(source: Source, *, gru_reset_after: bool | None = None) -> tuple[Any, dict[str, Any]]:
    """``(module, variables)``: a ``flax.linen`` module and ``{"params": ...}``;
    ``module.apply(variables, ids)`` returns logits and ``(h,)`` or ``(h, c)``."""
    weights = _weights(source, "flax", gru_reset_after)  # refused before the import
    return _framework("flax").build(weights)


def to_gluon(source: Source, *, gru_reset_after: bool | None = None) -> Any:
    """A hybridized Gluon ``HybridBlock``; ``net(ids, *net.begin_state(B))`` returns logits and
    the final state tensors."""
    weights = _weights(source, "gluon", gru_reset_after)  # refused before the import
    return _framework("gluon").build(weights)


def load_torch(path: str | os.PathLike[str]) -> Any:
    """The ``nn.Module`` in a file written by ``save(..., "torch", path)``."""
    return _framework("torch").load(path)


def load_keras(path: str | os.PathLike[str]) -> Any:
    """The ``keras.Model`` in a ``.keras`` file (``keras.saving.load_model``)."""
    return _framework("keras").load(path)


def load_flax(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """``(module, variables)`` from a file written by ``save(..., "flax", path)``."""
    return _framework("flax").load(path)


def load_gluon(prefix: str | os.PathLike[str]) -> Any:
    """The block exported by ``save(..., "gluon", prefix)`` (a ``gluon.SymbolBlock``)."""
    return _framework("gluon").load(prefix)


def _files(target: str, weights: Weights) -> dict[str, bytes]:
    """The export's files as bytes, by the suffix each adds to the output path."""
    if target == "safetensors":
        return {"": safetensors_export(weights)}
    if target == "npz":
        return {"": npz_export(weights)}
    module = _framework(target)
    if target == "torch":
        return {"": module.to_bytes(module.build(weights))}
    if target == "keras":
        return {"": module.to_bytes(module.build(weights))}
    if target == "flax":
        return {"": module.to_bytes(*module.build(weights), weights.vocab)}
    return module.to_files(module.build(weights))


def save(
    source: Source,
    to: str,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    gru_reset_after: bool | None = None,
) -> list[Path]:
    """Write ``source``'s weights as target ``to``'s file at ``out``; returns the files written.

    ``out`` is the file (for keras it must end in ``.keras``), for gluon the prefix of its two
    files. Each file is written atomically (:func:`rnn_backends.checkpointing.write_atomic`).

    Raises:
        ConfigError: unknown target, a model the target cannot hold, an existing file without
            ``overwrite``, or a keras name without ``.keras``.
        BackendUnavailableError: the target's framework is not installed here.
        CheckpointError: ``source`` is no readable checkpoint.
    """
    if to not in _TARGETS:
        raise ConfigError(f"unknown export target {to!r}; choose one of {', '.join(TARGETS)}")
    out = Path(out)
    if to == "keras" and out.suffix != ".keras":
        raise ConfigError(f"Keras saves models only to names ending in .keras; got {str(out)!r}")
    paths = [Path(f"{out}{suffix}") for suffix in _TARGETS[to].suffixes]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{existing[0]!r} exists; choose another --out or pass --overwrite to replace it"
        )
    files = _files(to, _weights(source, to, gru_reset_after))
    for path, suffix in zip(paths, _TARGETS[to].suffixes, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, files[suffix])
    return paths
