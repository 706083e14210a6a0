"""Every fenced block of README.md runs, or says why not (README.md, "The README is tested").

The blocks are found in the file itself, so a block someone adds is covered without touching
this file: a ``python`` block runs whole in a fresh interpreter, in the session of its framework;
each line of a ``bash`` block must be listed in :data:`CLI_LINES` below with the session that
runs it and the options that make it small; a block marked ``<!-- not run: REASON -->`` is
skipped for that reason. Any other block, a listed line that is gone from the README, or a
``bash`` line that is not listed, fails :func:`test_every_block_runs_or_says_why_not`.

Each run test is owned by its framework (a marker of that name, see tests/conftest.py), so the
torch session runs the torch blocks and the other sessions deselect them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rnn_backends.backends.registry import BACKENDS, canonical_name, is_installed
from rnn_backends.data.corpus import load_corpus
from rnn_backends.errors import BackendUnavailableError

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

RUN_LANGS = {"python", "bash"}  # run
TEXT_LANGS = {"text", "json", "csv", "toml"}  # shown, never run
# Modules whose import says which framework a Python block needs.
FRAMEWORK_MODULES = {"torch": "torch", "jax": "jax", "flax": "jax", "tensorflow": "tensorflow",
                     "keras": "tensorflow", "mxnet": "mxnet"}  # fmt: skip
DATA = {"timemachine"}  # what `<!-- test: data=... -->` may name


@dataclass(frozen=True)
class Line:
    """How a README command line runs in a test.

    Arguments:
        owner: the session that runs it (the backend whose tests it belongs to).
        add: options appended to the line to make it small (argparse takes the last value of a
            repeated option, so ``--epochs 1`` overrides the README's ``--epochs 30``).
        data: the line reads the Time Machine (skipped where ``$RNN_BACKENDS_DATA`` has none).
        files: files the line reads, made in the empty folder first (a copy of the embedded
            corpus's text).
    """

    owner: str
    add: tuple[str, ...] = ()
    data: bool = False
    files: tuple[str, ...] = ()


# Small options for training lines (one epoch of 8 batches) and the compare job.
SMALL = ("--epochs", "1", "--num-train", "256", "--batch-size", "32", "--num-val", "64")
SMALL_COMPARE = (*SMALL, "--hidden-size", "8", "--num-preds", "10")
# Sequential batches need num_train + num_steps tokens for at least one batch of batch_size rows.
SMALL_SEQUENTIAL = ("--epochs", "1", "--num-train", "2048", "--batch-size", "16", "--num-val", "64")

# Every command line of the README's bash blocks that runs, keyed by its text (without its
# comment). Add the lines you add to the README here, or mark their block not run, with a reason.
CLI_LINES: dict[str, Line] = {
    "rnn-backends info --devices": Line("numpy"),
    "rnn-backends train --backend torch --epochs 30": Line("torch", SMALL),
    "rnn-backends train --backend jax --corpus timemachine --dtype float64":
        Line("jax", SMALL, data=True),
    "rnn-backends train --backend mxnet --corpus my_book.txt --batching sequential":
        Line("mxnet", SMALL_SEQUENTIAL, files=("my_book.txt",)),
    'rnn-backends generate --checkpoint runs/torch/checkpoint --prefix "it has" --num-preds 50':
        Line("torch"),
    'rnn-backends generate --checkpoint runs/torch/checkpoint --prefix "it has" --temperature 0.8 '
    "--seed 1": Line("torch"),
    # The torch session has no JAX: the job would fail on it (rightly) without --allow-missing.
    "rnn-backends compare --frameworks torch,jax":
        Line("torch", (*SMALL_COMPARE, "--allow-missing")),
    "rnn-backends compare --frameworks torch,jax --allow-missing": Line("torch", SMALL_COMPARE),
    "rnn-backends train --backend torch --cell gru --num-layers 2 --epochs 30":
        Line("torch", SMALL),
    "rnn-backends train --backend torch --epochs 30 --out runs/rnn": Line("torch", SMALL),
    "rnn-backends train --backend torch --cell gru --num-layers 2 --epochs 30 --out runs/gru":
        Line("torch", SMALL),
    "rnn-backends train --backend torch --cell lstm --num-layers 2 --epochs 30 --out runs/lstm":
        Line("torch", SMALL),
    "rnn-backends train --backend jax --optimizer adamw --weight-decay 0.01 --schedule step "
    "--warmup-steps 20": Line("jax", SMALL),
    "rnn-backends export --checkpoint runs/torch --to torch --out model.pt": Line("torch"),
    "rnn-backends export --checkpoint runs/torch --to safetensors --out model.safetensors":
        Line("torch"),
    "rnn-backends export --checkpoint runs/torch --to npz --out weights.npz": Line("torch"),
    "rnn-backends compare --cell lstm --num-layers 2 --variant native":
        Line("torch", (*SMALL_COMPARE, "--allow-missing")),
    "rnn-backends bench --frameworks torch --out bench-results":
        Line("torch", ("--steps", "1", "--warmup", "0", "--sweeps", "", "--variants", "fast")),
    "python benchmarks/assemble.py bench-results": Line("torch"),
    # Data parallelism: SMALL's batch of 32 splits into 2 and 4 workers.
    "rnn-backends train --backend torch --data-parallel 2 --batch-size 1024": Line("torch", SMALL),
    "rnn-backends train --backend jax --data-parallel 4 --cell lstm": Line("jax", SMALL),
    "rnn-backends compare --frameworks torch,jax,tensorflow,mxnet --data-parallel 2":
        Line("torch", (*SMALL_COMPARE, "--allow-missing")),
    "python benchmarks/data_parallel.py torch":
        Line("torch", ("--workers", "2", "--steps", "3", "--batch-size", "8")),
}  # fmt: skip


# --- reading the README --------------------------------------------------------------------------


def command_key(text: str) -> str:
    """A command line without its comment, in one canonical spelling (quoting, spaces)."""
    return shlex.join(shlex.split(text, comments=True))


@dataclass
class Block:
    lang: str
    line: int  # of the opening fence, 1-based
    text: str
    options: dict[str, str] = field(default_factory=dict)  # from <!-- test: k=v ... -->
    not_run: str | None = None  # the reason, from <!-- not run: REASON -->

    @property
    def commands(self) -> list[tuple[int, str]]:
        """(README line number, canonical command) of each command line of a bash block."""
        return [(self.line + 1 + i, command_key(t)) for i, t in enumerate(self.text.splitlines())
                if command_key(t)]  # fmt: skip


def _mark(previous: str, block: Block, problems: list[str]) -> None:
    """Read the HTML comment on the line before a block into ``block``."""
    m = re.fullmatch(r"\s*<!--\s*(test|not run):(.*?)-->\s*", previous)
    if not m:
        return
    if m[1] == "not run":
        block.not_run = m[2].strip()
        if not block.not_run:
            problems.append(f"README.md:{block.line}: 'not run' without a reason")
        return
    for item in m[2].split():
        key, _, value = item.partition("=")
        if key not in ("framework", "data") or not value:
            problems.append(f"README.md:{block.line}: unknown test option {item!r} (framework=NAME "
                            "or data=timemachine)")  # fmt: skip
        block.options[key] = value


def read_blocks(text: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown text, and what is wrong with its marks."""
    blocks: list[Block] = []
    problems: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.fullmatch(r"```(\S*)\s*", lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            problems.append(f"README.md:{i + 1}: a fence that never closes")
            break
        block = Block(m[1], i + 1, "\n".join(lines[i + 1 : end]) + "\n")
        _mark(lines[i - 1] if i else "", block, problems)
        blocks.append(block)
        i = end + 1
    return blocks, problems


def python_owner(block: Block) -> str | None:
    """The framework a Python block needs: declared, or the one it names (numpy when none);
    None when it names several and declares none."""
    if "framework" in block.options:
        return canonical_name(block.options["framework"])
    named = set()
    for name in re.findall(r"get_backend\(\s*[\"'](\w+)[\"']", block.text):
        try:
            named.add(canonical_name(name))
        except BackendUnavailableError:
            named.add(name)  # unknown: the check below reports it
    for module in re.findall(r"^\s*(?:import|from)\s+(\w+)", block.text, re.M):
        if module in FRAMEWORK_MODULES:
            named.add(FRAMEWORK_MODULES[module])
    frameworks = named - {"numpy"}
    if len(frameworks) > 1:
        return None
    return frameworks.pop() if frameworks else "numpy"


def check(blocks: list[Block], problems: list[str]) -> list[str]:
    """Everything that keeps the README from being tested whole (empty when all is well)."""
    problems = list(problems)
    listed = set(CLI_LINES)
    seen: set[str] = set()
    for b in blocks:
        where = f"README.md:{b.line}"
        if b.lang not in RUN_LANGS | TEXT_LANGS:
            problems.append(f"{where}: a block of language {b.lang!r}; use python, bash, or text "
                            "for output")  # fmt: skip
        if b.not_run is not None or b.lang not in RUN_LANGS:
            continue
        if b.lang == "python":
            owner = python_owner(b)
            if owner is None or owner not in BACKENDS:
                problems.append(f"{where}: cannot tell this block's framework; say it with "
                                "<!-- test: framework=NAME -->")  # fmt: skip
            if b.options.get("data", "timemachine") not in DATA:
                problems.append(f"{where}: unknown data {b.options['data']!r}")
            continue
        for line, command in b.commands:
            seen.add(command)
            if command not in listed:
                problems.append(f"README.md:{line}: {command!r} is not in CLI_LINES of "
                                "tests/test_readme.py; list it there with small options, or "
                                "mark its block <!-- not run: REASON -->")  # fmt: skip
    for command in sorted(listed - seen):
        problems.append(f"CLI_LINES lists {command!r}, which no run bash block of README.md has")
    return problems


BLOCKS, MARK_PROBLEMS = read_blocks(README.read_text(encoding="utf-8"))
CLI_LINES = {command_key(k): v for k, v in CLI_LINES.items()}


def test_every_block_runs_or_says_why_not():
    problems = check(BLOCKS, MARK_PROBLEMS)
    assert not problems, "\n".join(problems)


# --- running the blocks --------------------------------------------------------------------------


def _param(value: object, owner: str, id: str):  # noqa: A002
    return pytest.param(value, id=id, marks=getattr(pytest.mark, owner))


def _python_params() -> list:
    return [
        _param(b, owner, f"python-L{b.line}-{owner}")
        for b in BLOCKS
        if b.lang == "python" and b.not_run is None and (owner := python_owner(b)) in BACKENDS
    ]


def _bash_params() -> list:
    """One test per bash block and owner: that owner's lines of the block, in order."""
    params = []
    for b in BLOCKS:
        if b.lang != "bash" or b.not_run is not None:
            continue
        runs = [(line, c, CLI_LINES[c]) for line, c in b.commands if c in CLI_LINES]
        for owner in dict.fromkeys(spec.owner for _, _, spec in runs):
            mine = [(line, c, spec) for line, c, spec in runs if spec.owner == owner]
            params.append(_param(mine, owner, f"bash-L{b.line}-{owner}"))
    return params


def _needs(owner: str, data: bool, request: pytest.FixtureRequest) -> None:
    """Skip, with the reason, where the owner's framework or the data is missing."""
    if not is_installed(owner):
        pytest.skip(f"{BACKENDS[owner].title} is not installed here")
    if data:
        request.getfixturevalue("data_dir")  # skips without the Time Machine, else sets its env


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip


@pytest.mark.parametrize("block", _python_params())
def test_python_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest):
    _needs(python_owner(block) or "numpy", "data" in block.options, request)
    script = tmp_path / f"readme_L{block.line}.py"
    script.write_text(block.text, encoding="utf-8")
    out = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600, env=_env())  # fmt: skip
    assert out.returncode == 0, f"README.md:{block.line} failed:\n{out.stderr[-3000:]}"


def _argv(command: str, add: tuple[str, ...]) -> list[str]:
    """The process to start for a README command: ``rnn-backends`` is this interpreter's
    ``-m rnn_backends``, ``python`` this interpreter with a script path taken from the repo."""
    program, *args = shlex.split(command)
    if program == "rnn-backends":
        return [sys.executable, "-m", "rnn_backends", *args, *add]
    if program in ("python", "python3"):
        script = REPO / args[0]
        return [sys.executable, str(script if script.is_file() else args[0]), *args[1:], *add]
    raise AssertionError(f"no way to run {program!r}: mark its block <!-- not run: REASON -->")


@pytest.mark.parametrize("lines", _bash_params())
def test_cli_lines_run(lines: list[tuple[int, str, Line]], tmp_path: Path,
                       request: pytest.FixtureRequest):  # fmt: skip
    owner = lines[0][2].owner
    _needs(owner, any(spec.data for _, _, spec in lines), request)
    for line, command, spec in lines:
        for name in spec.files:
            (tmp_path / name).write_text(load_corpus("default").text, encoding="utf-8")
        out = subprocess.run(_argv(command, spec.add), cwd=tmp_path, capture_output=True,
                             text=True, timeout=600, env=_env())  # fmt: skip
        assert out.returncode == 0, (
            f"README.md:{line}: {command} {shlex.join(spec.add)} exited with {out.returncode}:\n"
            f"{out.stderr[-3000:]}"
        )
        assert "Traceback" not in out.stderr, out.stderr[-3000:]


# --- the checker itself, on made-up READMEs ---------------------------------------------------

FAKE = """
<!-- not run: installs packages -->
```bash
pip install -e '.[torch]'
```

```bash
rnn-backends info --devices   # a listed line (its comment is not part of it)
rnn-backends train --backend torch --fancy
```

<!-- test: framework=jax data=timemachine -->
```python
from rnn_backends import get_backend
```

```python
import torch
from rnn_backends import get_backend
b = get_backend("jax")
```

<!-- not run: -->
```
no language
```
"""


def test_the_checker_finds_each_kind_of_untested_block():
    blocks, marks = read_blocks(FAKE)
    assert [(b.lang, b.not_run) for b in blocks] == [
        ("bash", "installs packages"), ("bash", None), ("python", None), ("python", None),
        ("", ""),
    ]  # fmt: skip
    problems = "\n".join(check(blocks, marks))
    assert "README.md:9: 'rnn-backends train --backend torch --fancy' is not in CLI_LINES" in (
        problems
    )
    assert "'pip install" not in problems  # its block says why it is not run
    assert "README.md:17: cannot tell this block's framework" in problems  # torch and jax
    assert "README.md:24: 'not run' without a reason" in problems
    assert "README.md:24: a block of language ''" in problems
    # Every other listed line is missing from this README: a stale list fails too.
    assert "CLI_LINES lists 'rnn-backends compare --frameworks torch,jax'" in problems
    assert "CLI_LINES lists 'rnn-backends info --devices'" not in problems


def test_a_python_blocks_framework_is_declared_or_named():
    def owner(text: str, mark: str = "") -> str | None:
        (block,), _ = read_blocks(f"{mark}\n```python\n{text}\n```\n")
        return python_owner(block)

    assert owner("x = 1") == "numpy"
    assert owner('b = get_backend("pytorch", dtype="float32")') == "torch"
    assert owner("import flax.linen as nn") == "jax"
    assert owner("from keras import layers") == "tensorflow"
    assert owner('get_backend("numpy"); get_backend("tf")') == "tensorflow"
    assert owner("import torch\nimport mxnet") is None
    assert owner("import torch\nimport mxnet", "<!-- test: framework=mxnet -->") == "mxnet"
