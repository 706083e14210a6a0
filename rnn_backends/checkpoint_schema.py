"""What a checkpoint's ``checkpoint.json`` may hold: the bounded JSON parser and the schema.

A checkpoint may come from anyone, so its metadata is parsed as untrusted input: at most
:data:`MAX_META_BYTES`, nested at most :data:`MAX_JSON_DEPTH` deep (checked on the raw bytes
before the parser recurses), no NaN or Infinity (JSON has neither; Python's parser would accept
them), and then every field this package reads is checked for its type and range. Fields this
version does not know are ignored, so a newer writer's additions do not break an older reader.

Every check raises :class:`Invalid` with what is wrong; :mod:`.checkpointing` turns it into a
one-line :class:`~rnn_backends.errors.CheckpointError` naming the checkpoint.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import CELL_STATES, DTYPES, ModelConfig, TrainConfig
from .errors import ConfigError

CHECKPOINT_FORMAT = 1
RESUME_FORMAT = 1
MAX_META_BYTES = 64 << 20  # about a million steps of history
MAX_JSON_DEPTH = 64  # the metadata this package writes is 6 deep
MAX_COUNT = 2**53  # the largest step, epoch or token count a checkpoint may record
# Arrays beside the parameters (a carried state, an optimizer's slots per parameter); each
# listed one only widens the weights file's size bound by a member's overhead.
MAX_ARRAYS = 4096
UNK = "<unk>"
EPOCH_FIELDS = frozenset({"epoch", "train_ppl", "train_ppl_book", "val_ppl", "val_ppl_book"})

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal, escapes included
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# An array's name: its zip member is aux:<name>.npy, never a path on disk.
ARRAY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class Invalid(Exception):
    """One thing wrong with a checkpoint, in words (no checkpoint path; the caller adds it)."""


# --- parsing ------------------------------------------------------------------------------------


def json_depth(data: bytes) -> int:
    """How deeply arrays and objects nest in JSON text ``data`` (0 for a scalar), counted on the
    bytes with string literals removed, so no parser recursion is needed."""
    skeleton = np.frombuffer(_STRING.sub(b"", data), dtype=np.uint8)
    brackets = skeleton[np.isin(skeleton, np.frombuffer(b"[{]}", dtype=np.uint8))]
    if not brackets.size:
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def _no_constant(name: str) -> Any:
    raise Invalid(f"it holds {name}, which is not JSON (a number must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Invalid(f"the number {text[:40]} is out of range")
    return value


def parse_json(data: bytes) -> Any:
    """JSON text ``data`` (already bounded in size) as Python values, refusing text nested deeper
    than :data:`MAX_JSON_DEPTH`, NaN, Infinity and numbers that overflow a float."""
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise Invalid(f"it is nested deeper than {MAX_JSON_DEPTH} levels ({depth})")
    try:
        text = data.decode("utf-8")
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise Invalid(f"it is not UTF-8 (bad byte at offset {exc.start})") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a 5,000-digit integer, ...
        raise Invalid(f"it is not JSON ({str(exc).splitlines()[0][:120]})") from None


# --- field checks -------------------------------------------------------------------------------


def kind(value: Any) -> str:
    """``"a list"``, ``"a string"``, ...: a JSON value's type in words."""
    for types, word in (
        (bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
        (list, "a list"), (dict, "a JSON object"),
    ):  # fmt: skip
        if isinstance(value, types):
            return word
    return "null" if value is None else type(value).__name__


def count(name: str, value: Any, low: int = 0) -> int:
    """``value`` as a count: an integer from ``low`` to :data:`MAX_COUNT` (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_COUNT:
        raise Invalid(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def number(name: str, value: Any) -> float:
    """``value`` as a finite number >= 0."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise Invalid(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def numbers(name: str, value: Any) -> list[float]:
    if not isinstance(value, list):
        raise Invalid(f"{name} must be a list of finite numbers, got {kind(value)}")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or not all(math.isfinite(v) for v in value):
        raise Invalid(f"{name} must be a list of finite numbers")
    return [float(v) for v in value]


def obj(name: str, value: Any, nullable: bool = False) -> dict[str, Any]:
    if nullable and value is None:
        return {}
    if not isinstance(value, dict):
        what = "a JSON object or null" if nullable else "a JSON object"
        raise Invalid(f"{name} must be {what}, got {kind(value)}")
    return value


def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string, got {kind(value)}")
    return value


def plain_file_name(name: str, value: Any) -> str:
    """A file name inside the checkpoint directory: letters, digits, ``.``, ``_``, ``-``, not
    starting with a dot; never a path, so nothing outside the directory can be named."""
    string(name, value)
    if not _PLAIN_NAME.fullmatch(value):
        raise Invalid(
            f"{name} {value[:200]!r} is not a plain file name in the checkpoint directory"
        )
    return value


# --- the metadata -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """The declared shape and dtype of one array in the weights file."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Metadata:
    """``checkpoint.json`` after every field was checked."""

    model_config: ModelConfig
    train_config: TrainConfig | None
    vocab: list[str]
    step: int
    params_sha256: str
    dtype: str
    extra: dict[str, Any]
    params_file: str
    arrays: dict[str, ArraySpec]  # the arrays stored beside the parameters
    legacy_arrays: bool = False  # written before ``arrays`` was recorded (version 0.1)


def check_vocab(tokens: Any, vocab_size: int) -> list[str]:
    """Unique single characters plus ``<unk>``, as many as the model's vocab_size."""
    if not isinstance(tokens, list):
        raise Invalid(f"vocab must be a list, got {kind(tokens)}")
    seen: set[str] = set()
    for token in tokens:
        if not isinstance(token, str) or (len(token) != 1 and token != UNK):
            raise Invalid(f"vocab token {token!r:.40} is neither one character nor {UNK!r}")
        if token in seen:
            raise Invalid(f"vocab lists {token!r} twice")
        seen.add(token)
    if UNK not in seen:
        raise Invalid(f"vocab lacks {UNK!r}")
    if len(tokens) != vocab_size:
        raise Invalid(f"vocabulary of {len(tokens)} tokens but vocab_size={vocab_size}")
    return tokens


def _configs(meta: dict[str, Any]) -> tuple[ModelConfig, TrainConfig | None]:
    model = obj("model_config", meta.get("model_config"))
    train = obj("train_config", meta.get("train_config"), nullable=True)
    try:
        model_config = ModelConfig.from_dict(model)
    except (ConfigError, TypeError) as exc:
        raise Invalid(f"model_config: {exc}") from None
    try:
        train_config = TrainConfig.from_saved(train) if train else None
    except (ConfigError, TypeError) as exc:
        raise Invalid(f"train_config: {exc}") from None
    return model_config, train_config


def _array_specs(value: Any) -> dict[str, ArraySpec]:
    listing = obj("arrays", value, nullable=True)
    if len(listing) > MAX_ARRAYS:
        raise Invalid(f"arrays lists {len(listing)} arrays, more than {MAX_ARRAYS}")
    specs = {}
    for name, spec in listing.items():
        if not ARRAY_NAME.fullmatch(name):
            raise Invalid(f"arrays names {name[:80]!r}, which is not a plain array name")
        where = f"arrays.{name}"
        if not isinstance(spec, dict) or set(spec) != {"shape", "dtype"}:
            raise Invalid(f"{where} must be an object with shape and dtype, got {kind(spec)}")
        shape = spec["shape"]
        if not isinstance(shape, list) or len(shape) > 8:
            raise Invalid(f"{where}.shape must be a list of at most 8 sizes")
        if spec["dtype"] not in DTYPES:
            raise Invalid(f"{where}.dtype must be one of {', '.join(DTYPES)}")
        specs[name] = ArraySpec(tuple(count(f"{where}.shape", n) for n in shape), spec["dtype"])
    return specs


def check_metadata(meta: Any) -> Metadata:
    """Every field of a parsed ``checkpoint.json`` this package reads, checked."""
    if not isinstance(meta, dict):
        raise Invalid(f"it must hold a JSON object, got {kind(meta)}")
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise Invalid(
            f"format {meta.get('format')!r:.40} is not one this version reads ({CHECKPOINT_FORMAT})"
        )
    model_config, train_config = _configs(meta)
    vocab = check_vocab(meta.get("vocab"), model_config.vocab_size)
    sha = meta.get("params_sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise Invalid("params_sha256 must be 64 hexadecimal digits")
    if meta.get("dtype") not in DTYPES:
        raise Invalid(f"dtype must be one of {', '.join(DTYPES)}, got {meta.get('dtype')!r:.40}")
    extra = obj("extra", meta.get("extra", {}))
    check_extra(extra, model_config, count("step", meta.get("step")))
    return Metadata(
        model_config=model_config,
        train_config=train_config,
        vocab=vocab,
        step=meta["step"],
        params_sha256=sha,
        dtype=meta["dtype"],
        extra=extra,
        params_file=plain_file_name("params_file", meta.get("params_file")),
        arrays=_array_specs(meta.get("arrays")),
        legacy_arrays="arrays" not in meta,
    )


# --- extra: what training records there --------------------------------------------------------


def check_extra(extra: dict[str, Any], model_config: ModelConfig, step: int) -> None:
    """The fields training keeps in ``extra``: the backend and corpus names and the training
    position (``resume``), each checked when present."""
    for name in ("backend", "corpus"):
        if name in extra:
            string(f"extra.{name}", extra[name])
    if "corpus_file" in extra:  # where the corpus was read from (see resume.stored_corpus)
        info = obj("extra.corpus_file", extra["corpus_file"])
        string("extra.corpus_file.path", info.get("path"))
        count("extra.corpus_file.size", info.get("size"))
        if not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(info["sha256"]):
            raise Invalid("extra.corpus_file.sha256 must be 64 hexadecimal digits")
    if "resume" in extra:
        check_resume_record(extra["resume"], model_config, step)


def _check_history(history: dict[str, Any], step: int) -> None:
    for name in ("step_loss", "step_grad_norm", "step_seconds"):
        if name in history:
            values = numbers(f"resume.history.{name}", history[name])
            if len(values) != step:
                raise Invalid(
                    f"resume.history.{name} has {len(values)} entries but the checkpoint is at "
                    f"step {step}"
                )
    epochs = history.get("epochs", [])
    if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
        raise Invalid("resume.history.epochs must be a list of JSON objects")
    for record in epochs:  # the fields training reads back; others are left alone
        for key in EPOCH_FIELDS & set(record):
            number(f"resume.history.epochs[].{key}", record[key])


def check_resume_record(info: Any, model_config: ModelConfig, step: int) -> None:
    """The training position ``extra["resume"]`` (see :mod:`.resume`), field by field."""
    info = obj("resume", info)
    if info.get("format") != RESUME_FORMAT:
        return  # another format: resume refuses it by name (checkpointing.resume_position)
    for name in ("epoch", "batch"):
        count(f"resume.{name}", info.get(name))
    if count("resume.step", info.get("step")) != step:
        raise Invalid(f"resume.step {info['step']} differs from step {step}")
    if not isinstance(info.get("finished"), bool):
        raise Invalid(f"resume.finished must be true or false, got {info.get('finished')!r:.40}")
    obj("resume.rng.epoch_start_state", obj("resume.rng", info.get("rng")).get("epoch_start_state"))
    meter = obj("resume.meter", info.get("meter"))
    number("resume.meter.loss_sum", meter.get("loss_sum"))
    count("resume.meter.tokens", meter.get("tokens"))
    numbers("resume.meter.batch_ppl", meter.get("batch_ppl"))
    states = len(CELL_STATES[model_config.cell])
    if info.get("carry") is not None and (
        isinstance(info["carry"], bool) or info["carry"] != states
    ):
        raise Invalid(
            f"resume.carry must be null or {states} (the state tensors of the "
            f"{model_config.cell} cell), got {info['carry']!r:.40}"
        )
    sha = info.get("corpus_sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise Invalid("resume.corpus_sha256 must be 64 hexadecimal digits")
    _check_history(obj("resume.history", info.get("history")), step)
