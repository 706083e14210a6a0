"""Data-parallel overhead and agreement: step time with 1, 2 and 4 workers and the bytes
all-reduced per step, for the frameworks importable in this interpreter; float64 differences of
the data-parallel weights after the run to one process of the same framework.

    PYTHONPATH=. python benchmarks/data_parallel.py FRAMEWORK [--workers 1 2 4] [--steps 30]
        [--out DIR]
    python benchmarks/data_parallel.py --plot DIR    # DIR/data_parallel.png from DIR/*.json

Prints one JSON line per worker count, and with ``--out`` writes them to ``DIR/FRAMEWORK.json``
(each framework runs in its own environment; ``--plot`` then draws them all, step time against
the number of workers, relative to one process). On a 2-core CPU the workers share two cores:
the point is overhead and correctness, not speed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from rnn_backends import ModelConfig, get_backend, init_params
from rnn_backends.parallel import launch, tasks


def plot(folder: Path) -> Path:
    """``folder/data_parallel.png``: each framework's median step time with N workers divided by
    its one-process time, from the ``--out`` files in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rnn_backends.checkpointing import atomic_stream

    fig, ax = plt.subplots(figsize=(6, 4))
    for path in sorted(folder.glob("*.json")):
        rows = json.loads(path.read_text())
        one = next(r["median_ms"] for r in rows if r["workers"] == "one process")
        counts = [r for r in rows if r["workers"] != "one process"]
        ax.plot([r["workers"] for r in counts], [r["median_ms"] / one for r in counts],
                marker="o", label=f"{rows[0]['framework']} ({one:.1f} ms in one process)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("data-parallel workers (sharing the same cores)")
    ax.set_ylabel("step time / one process")
    ax.set_title("Data-parallel overhead: the same global batch, float64")
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = folder / "data_parallel.png"
    with atomic_stream(target) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return target


def measure(framework: str, workers: list[int], steps: int,
            batch_size: int) -> list[dict[str, Any]]:  # fmt: skip
    """One row for one process, then one per worker count in ``workers``."""
    model = ModelConfig(vocab_size=28, hidden_size=32)
    params = init_params(model, seed=0, dtype="float64")
    rng = np.random.default_rng(0)
    shape = (batch_size, 32)
    batches = [(rng.integers(0, 28, shape), rng.integers(0, 28, shape)) for _ in range(steps)]
    single = tasks.timed_steps(get_backend(framework, dtype="float64", device="cpu"),
                               params, batches, 1.0, 1.0)  # fmt: skip
    rows: list[dict[str, Any]] = [{"framework": framework, "workers": "one process",
                                   "median_ms": 1000 * float(np.median(single["seconds"][1:]))}]
    print(json.dumps(rows[-1]), flush=True)
    for n in workers:
        got = launch.run(framework, n, tasks.timed_steps, (params, batches, 1.0, 1.0),
                         backend_kwargs={"dtype": "float64", "device": "cpu"})  # fmt: skip
        worst = max(float(np.max(np.abs(got["params"][k] - v)) / np.max(np.abs(v)))
                    for k, v in single["params"].items())  # fmt: skip
        rows.append({"framework": framework, "workers": n,
                     "median_ms": 1000 * float(np.median(got["seconds"][1:])),
                     "allreduce_bytes": got["allreduce_bytes"],
                     "worst_rel_diff_vs_one_process": worst})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework", nargs="?")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, help="also write the rows to OUT/FRAMEWORK.json")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="draw DIR/*.json and stop")
    args = parser.parse_args()
    if args.plot:
        print(plot(args.plot))
        return
    if not args.framework:
        parser.error("name a framework (torch, jax, tensorflow, mxnet) or pass --plot DIR")
    rows = measure(args.framework, args.workers, args.steps, args.batch_size)
    if args.out:
        from rnn_backends.checkpointing import write_json

        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / f"{args.framework}.json", rows)


if __name__ == "__main__":
    main()
