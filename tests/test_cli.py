"""The command line: info, train, generate, the options derived from the config dataclasses, and
what --help shows. (The table of bad inputs, through the CLI and the API, is
tests/test_bad_input.py.)"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing

import pytest

from rnn_backends.cli import _configs, build_parser, config_overrides, option_fields, option_flag
from rnn_backends.compare import default_spec
from rnn_backends.config import ModelConfig, TrainConfig

TINY = [
    "--batch-size",
    "16",
    "--num-steps",
    "8",
    "--num-train",
    "256",
    "--num-val",
    "64",
    "--epochs",
    "1",
    "--hidden-size",
    "8",
    "--no-progress",
]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rnn_backends", *args], capture_output=True, text=True, timeout=300
    )


def test_info_lists_backends():
    out = run_cli("info")
    assert out.returncode == 0
    for name in ("numpy", "torch", "jax", "tensorflow", "mxnet"):
        assert name in out.stdout


def test_train_then_generate_round_trip(tmp_path):
    out = run_cli(
        "train",
        "--backend",
        "numpy",
        "--dtype",
        "float64",
        "--out",
        str(tmp_path),
        "--num-preds",
        "10",
        *TINY,
    )
    assert out.returncode == 0, out.stderr
    assert "validation perplexity" in out.stdout
    gen = run_cli(
        "generate",
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--prefix",
        "the",
        "--num-preds",
        "12",
    )
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout.startswith("the")
    # The train command printed the same greedy continuation for its own prefix.
    gen2 = run_cli(
        "generate",
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--prefix",
        "the clock",
        "--num-preds",
        "10",
    )
    assert gen2.stdout.strip() == out.stdout.strip().splitlines()[-1]


def test_generate_errors_through_a_real_process(tmp_path):
    assert run_cli("train", "--backend", "numpy", "--out", str(tmp_path), *TINY).returncode == 0
    ck = str(tmp_path / "checkpoint")
    for args, needle in [
        (["--temperature", "0"], "temperature must be a finite number > 0"),
        (["--num-preds", "-1"], "num_preds must be an integer >= 0"),
    ]:
        out = run_cli("generate", "--checkpoint", ck, "--prefix", "the", *args)
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    weights = tmp_path / "checkpoint" / "params.npz"
    weights.write_bytes(weights.read_bytes()[:100])
    out = run_cli("generate", "--checkpoint", ck, "--prefix", "the")
    assert out.returncode == 2 and "truncated or corrupted" in out.stderr


def test_unknown_prefix_characters_warn(tmp_path):
    corpus = tmp_path / "abc.txt"
    corpus.write_text("abc cab bca " * 200)
    out = run_cli(
        "train",
        "--backend",
        "numpy",
        "--corpus",
        str(corpus),
        "--out",
        str(tmp_path / "run"),
        *TINY,
    )
    assert out.returncode == 0, out.stderr
    # train generates from its --prefix ("the clock": t, h, e, l, o, k are not in this corpus)
    # after training: one warning line of ours, not Python's warning with its source line.
    assert out.stderr.splitlines() == [
        "rnn-backends: warning: prefix characters 'thelok' are not in the vocabulary; they are "
        "read as <unk>"
    ], out.stderr
    out = run_cli(
        "generate",
        "--checkpoint",
        str(tmp_path / "run" / "checkpoint"),
        "--prefix",
        "abz",
        "--num-preds",
        "3",
    )
    assert out.returncode == 0
    assert out.stderr.splitlines() == [
        "rnn-backends: warning: prefix characters 'z' are not in the vocabulary; they are read "
        "as <unk>"
    ], out.stderr
    assert out.stdout.startswith("abz")


# Starts the command line through one of its two doors, with a Ctrl-C (a real SIGINT) that
# arrives while numpy is being imported: the slowest part of starting up.
_CTRL_C_DURING_IMPORT = r"""
import os, runpy, signal, sys

# A process started in the background by a non-interactive shell (as CI may start the suite)
# inherits SIGINT ignored, and Python then leaves it ignored; a terminal's Ctrl-C is not.
signal.signal(signal.SIGINT, signal.default_int_handler)

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            os.kill(os.getpid(), signal.SIGINT)
        return None

door = sys.argv.pop(1)
sys.argv[0] = "rnn-backends"
sys.meta_path.insert(0, CtrlC())
if door == "python -m":
    runpy.run_module("rnn_backends", run_name="__main__", alter_sys=True)
else:  # what the console script pyproject.toml declares does
    from rnn_backends.__main__ import run
    sys.exit(run())
"""


@pytest.mark.parametrize("door", ["python -m", "script"])
def test_ctrl_c_while_importing_is_one_line_and_status_130(door):
    """``python -m rnn_backends`` and the ``rnn-backends`` script import the package's
    dependencies only inside the handler that turns Ctrl-C into one line and status 130."""
    out = subprocess.run(
        [sys.executable, "-c", _CTRL_C_DURING_IMPORT, door, "info"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 130, out.stderr
    assert out.stderr.splitlines() == ["rnn-backends: error: interrupted"], out.stderr


def test_the_console_script_is_the_guarded_entry_point():
    """The test above runs ``rnn_backends.__main__:run``; the installed script must be it."""
    import tomllib

    from conftest import REPO

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["rnn-backends"] == "rnn_backends.__main__:run"


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_cli("train", "--backend", "numpy", "--out", str(blocker / "sub"), *TINY)
    assert out.returncode == 2 and "cannot create output directory" in out.stderr


# The config flags as the README documents them: renaming one breaks people's scripts.
CONFIG_FLAGS = {
    "hidden_size": "--hidden-size", "cell": "--cell", "num_layers": "--num-layers",
    "batch_size": "--batch-size", "num_steps": "--num-steps", "lr": "--lr",
    "max_epochs": "--epochs", "grad_clip": "--grad-clip", "seed": "--seed", "dtype": "--dtype",
    "batching": "--batching", "num_train": "--num-train", "num_val": "--num-val",
    "num_test": "--num-test",
    "optimizer": "--optimizer", "momentum": "--momentum", "beta1": "--beta1", "beta2": "--beta2",
    "eps": "--eps", "weight_decay": "--weight-decay", "schedule": "--schedule",
    "warmup_steps": "--warmup-steps", "lr_decay_steps": "--lr-decay-steps",
    "lr_decay_rate": "--lr-decay-rate", "data_parallel": "--data-parallel",
}  # fmt: skip
# Values that differ from the default and are valid alone (numbers in [0, 1), AdamW's decay with
# the optimizer left to the cell is refused: see test_config).
OTHER_VALUES = {"momentum": "0.5", "beta1": "0.5", "beta2": "0.5", "eps": "0.001",
                "weight_decay": None, "lr_decay_rate": "0.5"}  # fmt: skip


def _fields() -> list[dataclasses.Field]:
    return [*option_fields(ModelConfig), *option_fields(TrainConfig)]


def _other_value(field: dataclasses.Field) -> str | None:
    """A valid command-line value for ``field`` that differs from its default (None: no value
    is valid alone)."""
    choices = field.metadata["option"]["choices"]
    if choices:
        return next(c for c in choices if c != field.default)
    if field.name in OTHER_VALUES:
        return OTHER_VALUES[field.name]
    return str((field.default or 0) + 3)


def _field_type(field: dataclasses.Field) -> type:
    """int, float or str: the type the flag's value converts to (``int | None`` is int)."""
    hint = typing.get_type_hints(TrainConfig if field in option_fields(TrainConfig)
                                 else ModelConfig)[field.name]  # fmt: skip
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def test_the_config_flags_keep_their_names():
    assert {f.name: option_flag(f) for f in _fields()} == CONFIG_FLAGS


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_config_flag_reaches_its_field(command):
    """Each flag, given alone, sets its own field to the value given and nothing else."""
    parser = build_parser()
    for field in _fields():
        value = _other_value(field)
        if value is None:
            continue
        args = parser.parse_args([command, option_flag(field), value])
        given = {**config_overrides(args, ModelConfig), **config_overrides(args, TrainConfig)}
        expected = {field.name: _field_type(field)(value)}
        if command == "compare":
            spec = default_spec(overrides=given)
            assert {**spec.model, **spec.train}[field.name] == expected[field.name]
        assert given == expected


def test_options_left_out_take_the_dataclass_defaults():
    args = build_parser().parse_args(["train"])
    model, train = _configs(args, vocab_size=28)
    assert model == ModelConfig(vocab_size=28) and train == TrainConfig()


def test_help_lists_the_commands_but_not_the_worker():
    out = run_cli("--help")
    assert out.returncode == 0
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("    ")]
    assert listed == ["info", "train", "generate", "export", "compare", "bench"]
    assert "compare-worker" not in out.stdout and "SUPPRESS" not in out.stdout
    # Hidden, not gone: the compare job still starts it.
    assert "--phase" in run_cli("compare-worker", "--help").stdout


def test_bench_help_shows_its_options_and_importing_the_cli_starts_nothing():
    help_text = run_cli("bench", "--help").stdout
    for flag in ("--frameworks", "--python", "--preset", "--threads", "--jax-unroll"):
        assert flag in help_text
    probe = (
        "import sys; from rnn_backends.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('resource', 'rnn_backends.bench', 'rnn_backends.compare') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
