"""Command line: ``rnn-backends info | train | generate | export | compare | bench`` (also
``python -m rnn_backends``). ``compare-worker`` is internal: the compare job starts it in each
framework's environment, and ``--help`` does not list it.

The options for ModelConfig and TrainConfig fields are not written here: each field that carries
``option`` metadata (config.py) becomes a flag, with its name, type, choices and help.

User errors print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import json
import sys
import types
import typing
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .backends.registry import (
    BACKENDS,
    DEFAULT_ORDER,
    FRAMEWORKS,
    available_backends,
    canonical_name,
    default_backend,
    get_backend,
    install_hint,
)
from .checkpointing import Checkpoint
from .config import DTYPES, ModelConfig, TrainConfig
from .errors import NonFiniteError, UserError, WorkerError

PROG = "rnn-backends"
_CONFIG_CLASSES = (ModelConfig, TrainConfig)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line instead of usage + message; still exit status 2.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _device_arg(value: str) -> str:
    """``--device``: any label :func:`parse_device` accepts, as its canonical spelling."""
    from .backends.base import parse_device

    try:
        return str(parse_device(value))
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_DEVICE_HELP = "cpu, gpu (or cuda), tpu, optionally with an index: gpu:1"


def _fail(message: str, status: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """The package's warnings inside the block (e.g. prefix characters read as ``<unk>``) as one
    ``rnn-backends: warning: ...`` line each, instead of Python's form with a source line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for w in caught:
        print(f"{PROG}: warning: {w.message}", file=sys.stderr)


# --- options derived from the config dataclasses -------------------------------------------------


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if "option" in f.metadata]


def option_flag(field: dataclasses.Field) -> str:
    """``--hidden-size`` for ``hidden_size``, or the flag the field's metadata names."""
    return field.metadata["option"]["flag"] or "--" + field.name.replace("_", "-")


def _value_type(annotation: Any) -> type:
    # ``int | None`` takes an int on the command line (None is "left out").
    if isinstance(annotation, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def _add_config_options(
    p: argparse.ArgumentParser, default_help: str | None, defaults: dict[str, Any] | None = None
) -> None:
    """One flag per option field of ModelConfig and TrainConfig; ``dest`` is the field's name.

    Defaults are None ("left out") unless ``defaults`` names one. ``default_help`` ends each help
    text; None says the dataclass's default instead.
    """
    defaults = defaults or {}
    for cls in _CONFIG_CLASSES:
        hints = typing.get_type_hints(cls)
        for field in option_fields(cls):
            meta, flag = field.metadata["option"], option_flag(field)
            default = defaults.get(field.name)
            shown = default_help or f"default {meta.get('default_text') or field.default}"
            # A field with choices takes the string as it is; the others convert it.
            kind: dict[str, Any] = (
                {} if meta["choices"] else {"type": _value_type(hints[field.name])}
            )
            p.add_argument(
                flag,
                dest=field.name,
                **kind,
                choices=meta["choices"],
                default=default,
                # Named after the flag, as argparse would (--epochs EPOCHS, not MAX_EPOCHS).
                metavar=None if meta["choices"] else flag[2:].upper().replace("-", "_"),
                help=f"{meta['help']} ({shown if default is None else f'default {default}'})",
            )


def config_overrides(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The ``cls`` fields given on the command line (options left out are not in it)."""
    given = {f.name: getattr(args, f.name) for f in option_fields(cls)}
    return {name: value for name, value in given.items() if value is not None}


# --- info ----------------------------------------------------------------------------------------


def _framework_version(module: str) -> str | None:
    for dist in (module, f"{module}-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cmd_info(args: argparse.Namespace) -> int:
    print(f"rnn-backends {__version__} (python {sys.version.split()[0]})")
    installed = set(available_backends())
    for name, spec in BACKENDS.items():
        version = _framework_version(spec.framework)
        if name not in installed:
            print(f"  {name:<11} not installed  ({install_hint(name)})")
            continue
        line = f"  {name:<11} {spec.title} {version}"
        if args.devices:
            try:
                line += f"  device: {get_backend(name, dtype='float32').device}"
            except UserError as exc:
                line += f"  ({exc})"
        print(line)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    info = sub.add_parser("info", help="versions, installed backends, devices")
    info.add_argument("--devices", action="store_true", help="import each framework, show device")
    info.set_defaults(func=cmd_info)


# --- train ---------------------------------------------------------------------------------------


def _configs(
    args: argparse.Namespace, vocab_size: int, base: Checkpoint | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """The configs the options ask for; options left out take the checkpoint's values when
    resuming (``base``), else the dataclasses' defaults."""
    model = base.model_config.to_dict() if base else {"vocab_size": vocab_size}
    train = base.train_config.to_dict() if base and base.train_config else {}
    model.update(config_overrides(args, ModelConfig))
    train.update(config_overrides(args, TrainConfig))
    return ModelConfig.from_dict(model), TrainConfig.from_dict(train)


def _train_out(args: argparse.Namespace, resume_dir: Path | None, backend_name: str) -> Path:
    from .checkpointing import CHECKPOINT_DIR

    if args.out is not None:
        return Path(args.out)
    if resume_dir is not None and resume_dir.name == CHECKPOINT_DIR:
        return resume_dir.parent
    return Path(f"runs/{canonical_name(backend_name)}")


def _default() -> str:
    """The default backend, said on standard error (one line): which one, and why."""
    name = default_backend()
    missing = DEFAULT_ORDER[: DEFAULT_ORDER.index(name)]
    why = f" ({', '.join(missing)}: not installed)" if missing else ""
    print(f"{PROG}: no --backend given, using {name}{why}", file=sys.stderr)
    return name


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpointing import find_checkpoint, load_checkpoint, resume_position
    from .data.corpus import load_corpus
    from .generate import check_options, generate
    from .resume import stored_corpus
    from .summary import train_summary
    from .train import train

    check_options(args.num_preds)  # before training, not after it
    if args.checkpoint_every < 0:
        raise UserError(
            f"--checkpoint-every must be >= 0 steps (0: only at the start and the end), got "
            f"{args.checkpoint_every}"
        )
    base = resume_dir = None
    if args.resume is not None:
        resume_dir = find_checkpoint(args.resume)
        base = load_checkpoint(resume_dir)
        resume_position(base, resume_dir)
    # base and resume_dir are set together; the path the checkpoint stores is checked.
    if base is not None and resume_dir is not None and args.corpus is None:
        corpus = stored_corpus(base, resume_dir)
    else:
        corpus = load_corpus(args.corpus or "default")
    model_config, train_config = _configs(args, len(corpus.vocab), base)
    backend_name = args.backend or (base.extra.get("backend") if base else None) or _default()
    if base is not None and canonical_name(backend_name) != base.extra.get("backend"):
        print(
            f"{PROG}: warning: continuing a {base.extra.get('backend')} run with {backend_name}; "
            "it goes on from the same weights and data position, but not bit for bit",
            file=sys.stderr,
        )
    out_dir = _train_out(args, resume_dir, backend_name)
    if train_config.data_parallel > 1:
        # The workers make their own backends (JAX must join its processes before it starts);
        # this process makes one after them, to report and to generate.
        result = _train_data_parallel(args, backend_name, corpus, model_config, train_config,
                                      out_dir, resume_dir)  # fmt: skip
        if result.checkpoint is None:  # another host's process of a multi-host job
            print(f"{PROG}: data-parallel worker finished; the first process reports")
            return 0
    backend = get_backend(
        backend_name, dtype=train_config.dtype, device=args.device, variant=args.variant,
        gru_reset_after=model_config.gru_reset_after,
    )
    if train_config.data_parallel == 1:
        result = train(
            backend,
            corpus,
            model_config,
            train_config,
            out_dir=out_dir,
            progress=None if args.progress else False,
            checkpoint_every=args.checkpoint_every or None,
            resume=resume_dir,
            overwrite=args.overwrite,
            baselines=True,
        )
    last = result.history["epochs"][-1]
    where = backend.device + (f" x {train_config.data_parallel} data-parallel workers"
                              if train_config.data_parallel > 1 else "")  # fmt: skip
    print(
        f"{backend.name} ({backend.variant}, {where}): epoch {last['epoch']} "
        f"train perplexity {last['train_ppl']:.3f}, validation perplexity {last['val_ppl']:.3f}"
    )
    for line in train_summary(result.history):
        print(line)
    print(f"checkpoint: {result.checkpoint}")
    if args.num_preds:
        weights = result.tensors if result.tensors is not None else result.params
        with _warnings_as_lines():
            text = generate(backend, weights, corpus.vocab, args.prefix, args.num_preds)
        print(text)
    return 0


def _train_data_parallel(args: argparse.Namespace, backend_name: str, corpus: Any,
                         model_config: Any, train_config: Any, out_dir: Path,
                         resume_dir: Path | None) -> Any:  # fmt: skip
    """``train`` on ``--data-parallel N`` workers of the backend's engine (its own processes)."""
    from .parallel import api

    return api.train(
        backend_name, corpus, model_config, train_config, out_dir,
        backend_kwargs={"variant": args.variant, "device": args.device,
                        "gru_reset_after": model_config.gru_reset_after},
        checkpoint_every=args.checkpoint_every or None, resume=resume_dir,
        overwrite=args.overwrite,
    )  # fmt: skip


def _add_train(sub: argparse._SubParsersAction) -> None:
    tr = sub.add_parser("train", help="train one backend and write a checkpoint")
    # Defaults of None: with --resume an option left out means "as the checkpoint has it".
    tr.add_argument("--backend", default=None,
                    help="numpy, torch, jax, tensorflow, mxnet (default: the first installed of "
                    f"{', '.join(DEFAULT_ORDER)})")
    tr.add_argument("--variant", default=None, help="textbook, concat, fast (default) or native")
    tr.add_argument("--device", default=None, type=_device_arg,
                    help=f"{_DEVICE_HELP} (default: a GPU if there is one)")
    tr.add_argument("--corpus", default=None, help="default, timemachine, or a text file")
    _add_config_options(tr, default_help=None)
    tr.add_argument("--out", default=None, help="output directory (default runs/BACKEND)")
    tr.add_argument("--checkpoint-every", type=int, default=50, metavar="N",
                    help="write a checkpoint every N steps (default 50; 0: only at the start and "
                    "the end)")
    tr.add_argument("--resume", default=None, metavar="DIR",
                    help="continue the run whose --out (or checkpoint) directory is DIR; options "
                    "left out are taken from its checkpoint, and the result equals an "
                    "uninterrupted run")
    tr.add_argument("--overwrite", action="store_true",
                    help="replace a checkpoint of another run in --out (refused otherwise)")
    tr.add_argument("--prefix", default="the clock")
    tr.add_argument("--num-preds", type=int, default=50)
    tr.add_argument("--no-progress", dest="progress", action="store_false",
                    help="print nothing while training (default: a progress bar on a terminal, "
                    "else one line per epoch, on stderr)")
    tr.set_defaults(func=cmd_train)


# --- generate ------------------------------------------------------------------------------------


def cmd_generate(args: argparse.Namespace) -> int:
    from .checkpointing import load_checkpoint
    from .generate import check_options, generate

    check_options(args.num_preds, args.temperature, args.seed)
    ckpt = load_checkpoint(args.checkpoint)
    dtype = args.dtype or str(next(iter(ckpt.params.values())).dtype)
    backend = get_backend(args.backend, dtype=dtype, device=args.device, variant=args.variant,
                          gru_reset_after=ckpt.model_config.gru_reset_after)
    with _warnings_as_lines():
        text = generate(
            backend,
            ckpt.params,
            ckpt.vocab,
            args.prefix,
            args.num_preds,
            temperature=args.temperature,
            seed=args.seed,
        )
    print(json.dumps(text) if args.json else text)
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="generate text from a checkpoint")
    gen.add_argument("--checkpoint", required=True, help="a checkpoint directory")
    gen.add_argument("--prefix", required=True)
    gen.add_argument("--num-preds", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=None, help="omit for greedy")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true", help="print the text as a JSON string")
    gen.add_argument("--backend", default="numpy")
    gen.add_argument("--variant", default=None)
    gen.add_argument("--device", default=None, type=_device_arg, help=_DEVICE_HELP)
    gen.add_argument("--dtype", default=None, choices=DTYPES, help="default: the checkpoint's")
    gen.set_defaults(func=cmd_generate)


# --- export --------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from .export import save

    for path in save(args.checkpoint, args.to, args.out, overwrite=args.overwrite):
        print(path)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    from .export import TARGETS

    ex = sub.add_parser("export", help="a checkpoint as a framework's model or a weights file")
    ex.add_argument("--checkpoint", required=True,
                    help="a checkpoint directory, or the --out directory of a train run")
    ex.add_argument("--to", required=True, choices=TARGETS,
                    help="torch: torch.save of an nn.Module's state dict and config; keras: a "
                    ".keras model; flax: msgpack of params and config; gluon: HybridBlock.export;"
                    " safetensors, npz: the weights under the book's names")
    ex.add_argument("--out", required=True,
                    help="the file to write (keras: a name ending in .keras; gluon: the prefix "
                    "of PREFIX-symbol.json and PREFIX-0000.params)")
    ex.add_argument("--overwrite", action="store_true", help="replace existing files")
    ex.set_defaults(func=cmd_export)


# --- compare -------------------------------------------------------------------------------------


def _frameworks(chunks: Sequence[str]) -> list[str]:
    """Canonical names from comma-separated chunks, each once (``torch,pytorch`` is torch);
    an unknown name is a UserError."""
    return list(dict.fromkeys(canonical_name(f) for chunk in chunks for f in chunk.split(",") if f))


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import default_spec, run_compare
    from .workers import parse_pythons

    pythons = parse_pythons(args.python)
    frameworks = _frameworks(args.frameworks)
    overrides = {**config_overrides(args, ModelConfig), **config_overrides(args, TrainConfig)}
    spec = default_spec(
        args.corpus,
        args.preset,
        overrides,
        args.variant,
        args.device,
        prefix=args.prefix,
        num_preds=args.num_preds,
    )
    report = run_compare(args.out, frameworks or list(FRAMEWORKS), spec, pythons,
                         allow_missing=args.allow_missing)  # fmt: skip
    md = Path(args.out) / "report.md"
    verdict = "PASS" if report["passed"] else "FAIL"
    for row in report["frameworks"]:  # skipped with --allow-missing: said here, not only in md
        if str(row.get("status", "")).startswith("not installed"):
            print(f"{PROG}: warning: {row['backend']} was not run: {row['status']}",
                  file=sys.stderr)  # fmt: skip
    print(f"{verdict}: report written to {md}")
    for failure in report["failures"]:
        print(f"  {failure}")
    return 0 if report["passed"] else 1


def _add_python_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--python", action="append", default=[], metavar="NAME=PATH",
                   help="run framework NAME's worker with this interpreter (its own venv)")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    from .presets import PRESETS

    cmp_ = sub.add_parser("compare", help="train every framework side by side; write a report")
    cmp_.add_argument("--frameworks", action="append", default=[],
                      help=f"comma-separated (default: {','.join(FRAMEWORKS)})")
    _add_python_option(cmp_)
    cmp_.add_argument("--out", default="report", help="report directory (default ./report)")
    cmp_.add_argument("--allow-missing", action="store_true",
                      help="skip a framework that is not installed instead of failing the job")
    cmp_.add_argument("--corpus", default="default")
    cmp_.add_argument("--preset", default="quick", choices=sorted(PRESETS),
                      help="quick (default; float64), textbook (float64) or quality (float32: "
                      "a GRU that beats the best n-gram; see README)")
    cmp_.add_argument("--variant", default=None)
    cmp_.add_argument("--device", default=None, type=_device_arg,
                      help=f"{_DEVICE_HELP}; every framework runs there, judged against the "
                      "float64 oracle on the CPU")
    # No dtype default here: the preset says (float64, but float32 for quality).
    _add_config_options(cmp_, default_help="overrides the preset")
    cmp_.add_argument("--prefix", default="the clock")
    cmp_.add_argument("--num-preds", type=int, default=40)
    cmp_.set_defaults(func=cmd_compare)


def cmd_compare_worker(args: argparse.Namespace) -> int:
    from .compare import run_worker

    run_worker(canonical_name(args.backend), Path(args.out), args.phase)
    return 0


def _add_compare_worker(sub: argparse._SubParsersAction) -> None:
    # No help=: argparse then leaves it out of the command list.
    worker = sub.add_parser("compare-worker")
    worker.add_argument("--backend", required=True)
    worker.add_argument("--out", required=True)
    worker.add_argument("--phase", choices=["train", "interchange"], required=True)
    worker.set_defaults(func=cmd_compare_worker)


# --- bench ---------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchrun import run
    from .workers import parse_pythons

    pythons = parse_pythons(args.python)
    out = Path(args.out)
    outcomes = run(
        out, pythons, _frameworks([args.frameworks]),
        preset=args.preset,
        variants=args.variants.split(",") if args.variants else None,
        sweeps=[s for s in args.sweeps.split(",") if s] if args.sweeps is not None else None,
        steps=args.steps, warmup=args.warmup, dtype=args.dtype, device=args.device,
        threads=args.threads or None, jax_unroll=args.jax_unroll,
    )
    for fw, outcome in outcomes.items():
        if not outcome.ok:
            print(f"{PROG}: warning: {fw}: worker {outcome.describe()}", file=sys.stderr)
    written = [str(out / f"{fw}.json") for fw, outcome in outcomes.items() if outcome.ok]
    print(f"written: {', '.join(written) or 'nothing'}")
    print(f"table and plots: python benchmarks/assemble.py {out}")
    return 0


def _add_bench(sub: argparse._SubParsersAction) -> None:
    from .benchrun import PRESETS

    p = sub.add_parser("bench", help="time one training step per framework and variant")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated")
    _add_python_option(p)
    p.add_argument("--out", default="bench-results",
                   help="directory for the JSON files (default bench-results, git-ignored; "
                   "benchmarks/results holds the published ones)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="quick: textbook config, every variant and stock baseline (default on "
                   "the CPU); sweep: T, H, B sweeps for fast and native; full: both; gpu: fast, "
                   "native and the compiled stock layers at the textbook and a large config "
                   "(default with --device gpu)")
    p.add_argument("--variants", default=None,
                   help="comma-separated, overrides the preset: textbook, concat, fast, native, "
                   "stock (every stock baseline) or stock:NAME")
    p.add_argument("--sweeps", default=None, help="comma-separated of T,H,B ('' for none)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--device", default="cpu", type=_device_arg, help=_DEVICE_HELP)
    p.add_argument("--threads", type=int, default=1,
                   help="threads per framework (default 1, so that figures from a machine "
                   "shared with other work stay comparable; 0 leaves each framework's default)")
    p.add_argument("--jax-unroll", type=int, default=None, help="lax.scan unroll for JAX")
    p.set_defaults(func=cmd_bench)


# --- the parser and main -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The textbook's char-level RNN LM in four frameworks.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    # metavar: the usage line names the listed commands only (not compare-worker).
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND")
    for add in (_add_info, _add_train, _add_generate, _add_export, _add_compare, _add_bench,
                _add_compare_worker):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        return _fail(str(exc))
    except (NonFiniteError, WorkerError) as exc:
        return _fail(str(exc), status=1)
    except KeyboardInterrupt:
        return _fail("interrupted", status=130)


if __name__ == "__main__":
    sys.exit(main())
