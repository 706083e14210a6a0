"""Command line: ``rnn-backends info | train | generate`` (also ``python -m rnn_backends``).

User errors print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .backends.registry import BACKENDS, FRAMEWORKS, available_backends, canonical_name, get_backend
from .config import BATCHINGS, CELLS, DTYPES, ModelConfig, TrainConfig
from .errors import NonFiniteError, UserError
from .params import Checkpoint

PROG = "rnn-backends"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line instead of usage + message; still exit status 2.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _fail(message: str, status: int = 2) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _framework_version(module: str) -> str | None:
    dist = {
        "torch": "torch",
        "jax": "jax",
        "tensorflow": "tensorflow",
        "mxnet": "mxnet",
        "numpy": "numpy",
    }[module]
    for name in (dist, f"{dist}-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cmd_info(args: argparse.Namespace) -> int:
    print(f"rnn-backends {__version__} (python {sys.version.split()[0]})")
    installed = set(available_backends())
    for name, spec in BACKENDS.items():
        version = _framework_version(spec.framework)
        if name not in installed:
            print(f"  {name:<11} not installed  (pip install 'rnn-backends[{spec.extra}]')")
            continue
        line = f"  {name:<11} {spec.title} {version}"
        if args.devices:
            try:
                line += f"  device: {get_backend(name, dtype='float32').device}"
            except UserError as exc:
                line += f"  ({exc})"
        print(line)
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    # Defaults of None: with --resume an option left out means "as the checkpoint has it".
    p.add_argument("--backend", default=None, help="numpy, torch (default), jax, tensorflow, mxnet")
    p.add_argument("--variant", default=None, help="textbook, concat, fast (default) or native")
    p.add_argument("--device", default=None, choices=["cpu", "gpu"], help="default: GPU if any")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="default float32")


# ModelConfig options and their defaults for a new run (the same name on the command line).
_MODEL_OPTIONS = {"hidden_size": 32, "cell": "rnn", "num_layers": 1}
_TRAIN_OPTIONS = {  # option -> TrainConfig field
    "batch_size": "batch_size",
    "num_steps": "num_steps",
    "lr": "lr",
    "epochs": "max_epochs",
    "grad_clip": "grad_clip",
    "seed": "seed",
    "dtype": "dtype",
    "batching": "batching",
    "num_train": "num_train",
    "num_val": "num_val",
}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--corpus", default=None, help="default, timemachine, or a text file")
    p.add_argument("--cell", default=None, choices=CELLS)
    p.add_argument("--hidden-size", type=int, default=None, help="default 32")
    p.add_argument("--num-layers", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help=f"default {d.batch_size}")
    p.add_argument("--num-steps", type=int, default=None, help=f"default {d.num_steps}")
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}")
    p.add_argument("--epochs", type=int, default=None, help=f"default {d.max_epochs}")
    p.add_argument("--grad-clip", type=float, default=None, help="0 disables clipping")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batching", default=None, choices=BATCHINGS)
    p.add_argument(
        "--num-train",
        type=int,
        default=None,
        help="training windows (default: the textbook's 10000)",
    )
    p.add_argument("--num-val", type=int, default=None)


def _configs(
    args: argparse.Namespace, vocab_size: int, base: Checkpoint | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """The configs the options ask for; options left out take the checkpoint's values when
    resuming (``base``), else the defaults."""
    model = base.model_config.to_dict() if base else {"vocab_size": vocab_size, **_MODEL_OPTIONS}
    train = base.train_config.to_dict() if base and base.train_config else TrainConfig().to_dict()
    for option in _MODEL_OPTIONS:
        if getattr(args, option) is not None:
            model[option] = getattr(args, option)
    for option, name in _TRAIN_OPTIONS.items():
        if getattr(args, option) is not None:
            train[name] = getattr(args, option)
    return ModelConfig.from_dict(model), TrainConfig.from_dict(train)


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpointing import CHECKPOINT_DIR, find_checkpoint, resume_position
    from .data.corpus import load_corpus
    from .generate import generate
    from .params import load_checkpoint
    from .train import train

    if args.num_preds < 0:
        raise UserError(f"--num-preds must be >= 0, got {args.num_preds}")
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
    corpus = load_corpus(args.corpus or (base.extra.get("corpus") if base else None) or "default")
    model_config, train_config = _configs(args, len(corpus.vocab), base)
    backend_name = args.backend or (base.extra.get("backend") if base else None) or "torch"
    if base is not None and canonical_name(backend_name) != base.extra.get("backend"):
        print(
            f"{PROG}: warning: continuing a {base.extra.get('backend')} run with {backend_name}; "
            "it goes on from the same weights and data position, but not bit for bit",
            file=sys.stderr,
        )
    if args.out is not None:
        out = Path(args.out)
    elif resume_dir is not None and resume_dir.name == CHECKPOINT_DIR:
        out = resume_dir.parent
    else:
        out = Path(f"runs/{canonical_name(backend_name)}")
    backend = get_backend(
        backend_name, dtype=train_config.dtype, device=args.device, variant=args.variant,
        gru_reset_after=model_config.gru_reset_after,
    )
    result = train(
        backend,
        corpus,
        model_config,
        train_config,
        out_dir=out,
        progress=None if args.progress else False,
        checkpoint_every=args.checkpoint_every or None,
        resume=resume_dir,
        overwrite=args.overwrite,
    )
    last = result.history["epochs"][-1]
    print(
        f"{backend.name} ({backend.variant}, {backend.device}): epoch {last['epoch']} "
        f"train perplexity {last['train_ppl']:.3f}, validation perplexity {last['val_ppl']:.3f}"
    )
    print(f"checkpoint: {result.checkpoint}")
    if args.num_preds:
        print(generate(backend, result.native, corpus.vocab, args.prefix, args.num_preds))
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .params import load_checkpoint

    ckpt = load_checkpoint(args.checkpoint)
    dtype = args.dtype or str(next(iter(ckpt.params.values())).dtype)
    backend = get_backend(args.backend, dtype=dtype, device=args.device, variant=args.variant,
                          gru_reset_after=ckpt.model_config.gru_reset_after)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        text = generate(
            backend,
            ckpt.params,
            ckpt.vocab,
            args.prefix,
            args.num_preds,
            temperature=args.temperature,
            seed=args.seed,
        )
    for w in caught:
        print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    print(json.dumps(text) if args.json else text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import default_spec, run_compare

    pythons = {}
    for item in args.python:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--python takes NAME=PATH, got {item!r}")
        if not Path(path).is_file():
            raise UserError(f"--python {name}: interpreter {path!r} does not exist")
        pythons[canonical_name(name)] = path
    frameworks = [f for chunk in args.frameworks for f in chunk.split(",") if f]
    for f in frameworks:
        canonical_name(f)
    overrides = {
        "hidden_size": args.hidden_size,
        "batch_size": args.batch_size,
        "num_steps": args.num_steps,
        "lr": args.lr,
        "max_epochs": args.epochs,
        "grad_clip": args.grad_clip,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "seed": args.seed,
        "batching": args.batching,
        "cell": args.cell,
        "num_layers": args.num_layers,
    }
    spec = default_spec(
        args.corpus,
        args.preset,
        overrides,
        args.variant,
        args.device,
        args.dtype,
        args.prefix,
        args.num_preds,
    )
    report = run_compare(args.out, frameworks or list(FRAMEWORKS), spec, pythons)
    md = Path(args.out) / "report.md"
    verdict = "PASS" if report["passed"] else "FAIL"
    print(f"{verdict}: report written to {md}")
    for failure in report["failures"]:
        print(f"  {failure}")
    return 0 if report["passed"] else 1


def cmd_compare_worker(args: argparse.Namespace) -> int:
    from .compare import run_worker

    run_worker(canonical_name(args.backend), Path(args.out), args.phase)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The textbook's char-level RNN LM in four frameworks.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = sub.add_parser("info", help="versions, installed backends, devices")
    info.add_argument("--devices", action="store_true", help="import each framework, show device")
    info.set_defaults(func=cmd_info)

    tr = sub.add_parser("train", help="train one backend and write a checkpoint")
    _add_model_args(tr)
    _add_train_args(tr)
    tr.add_argument("--out", default=None, help="output directory (default runs/BACKEND)")
    tr.add_argument(
        "--checkpoint-every",
        type=int,
        default=50,
        metavar="N",
        help="write a checkpoint every N steps (default 50; 0: only at the start and the end)",
    )
    tr.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue the run whose --out (or checkpoint) directory is DIR; options left out "
        "are taken from its checkpoint, and the result equals an uninterrupted run",
    )
    tr.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a checkpoint of another run in --out (refused otherwise)",
    )
    tr.add_argument("--prefix", default="the clock")
    tr.add_argument("--num-preds", type=int, default=50)
    tr.add_argument("--no-progress", dest="progress", action="store_false")
    tr.set_defaults(func=cmd_train)

    gen = sub.add_parser("generate", help="generate text from a checkpoint")
    gen.add_argument("--checkpoint", required=True, help="a checkpoint directory")
    gen.add_argument("--prefix", required=True)
    gen.add_argument("--num-preds", type=int, default=50)
    gen.add_argument("--temperature", type=float, default=None, help="omit for greedy")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true", help="print the text as a JSON string")
    gen.add_argument("--backend", default="numpy")
    gen.add_argument("--variant", default=None)
    gen.add_argument("--device", default=None, choices=["cpu", "gpu"])
    gen.add_argument("--dtype", default=None, choices=DTYPES, help="default: the checkpoint's")
    gen.set_defaults(func=cmd_generate)

    cmp_ = sub.add_parser("compare", help="train every framework side by side; write a report")
    cmp_.add_argument(
        "--frameworks",
        action="append",
        default=[],
        help="comma-separated (default: torch,mxnet,jax,tensorflow)",
    )
    cmp_.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="run framework NAME's worker with this interpreter (its own venv)",
    )
    cmp_.add_argument("--out", default="report", help="report directory (default ./report)")
    cmp_.add_argument("--corpus", default="default")
    cmp_.add_argument("--preset", default="quick", help="quick (default) or textbook")
    cmp_.add_argument("--dtype", default="float64", choices=DTYPES)
    cmp_.add_argument("--variant", default=None)
    cmp_.add_argument("--device", default=None, choices=["cpu", "gpu"])
    cmp_.add_argument("--cell", default=None, choices=CELLS)
    cmp_.add_argument("--num-layers", type=int, default=None)
    for flag, kind in [
        ("--hidden-size", int),
        ("--batch-size", int),
        ("--num-steps", int),
        ("--lr", float),
        ("--epochs", int),
        ("--grad-clip", float),
        ("--num-train", int),
        ("--num-val", int),
        ("--seed", int),
    ]:
        cmp_.add_argument(flag, type=kind, default=None, help="overrides the preset")
    cmp_.add_argument("--batching", default=None, choices=BATCHINGS)
    cmp_.add_argument("--prefix", default="the clock")
    cmp_.add_argument("--num-preds", type=int, default=40)
    cmp_.set_defaults(func=cmd_compare)

    worker = sub.add_parser("compare-worker", help=argparse.SUPPRESS)
    worker.add_argument("--backend", required=True)
    worker.add_argument("--out", required=True)
    worker.add_argument("--phase", choices=["train", "interchange"], required=True)
    worker.set_defaults(func=cmd_compare_worker)

    # bench: the training-step benchmark (rnn_backends.bench; its options live there).
    from .bench import build_parser as bench_options
    from .bench import main_run as cmd_bench

    bench = sub.add_parser("bench", help="time one training step per framework and variant")
    bench_options(bench).set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as exc:
        return _fail(str(exc))
    except NonFiniteError as exc:
        return _fail(str(exc), status=1)
    except KeyboardInterrupt:
        return _fail("interrupted", status=130)


if __name__ == "__main__":
    sys.exit(main())
