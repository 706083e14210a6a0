"""Data-parallel overhead and agreement: step time with 1, 2 and 4 workers and the bytes
all-reduced per step, for the frameworks importable in this interpreter; float64 differences of
the data-parallel weights after the run to one process of the same framework.

    PYTHONPATH=. python benchmarks/data_parallel.py FRAMEWORK [--workers 1 2 4] [--steps 30]

Prints one JSON line per worker count. On a 2-core CPU the workers share two cores: the point is
overhead and correctness, not speed.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from rnn_backends import ModelConfig, get_backend, init_params
from rnn_backends.parallel import launch, tasks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    model = ModelConfig(vocab_size=28, hidden_size=32)
    params = init_params(model, seed=0, dtype="float64")
    rng = np.random.default_rng(0)
    shape = (args.batch_size, 32)
    batches = [(rng.integers(0, 28, shape), rng.integers(0, 28, shape)) for _ in range(args.steps)]
    single = tasks.timed_steps(get_backend(args.framework, dtype="float64", device="cpu"),
                               params, batches, 1.0, 1.0)  # fmt: skip
    print(json.dumps({"framework": args.framework, "workers": "one process",
                      "median_ms": 1000 * float(np.median(single["seconds"][1:]))}), flush=True)
    for n in args.workers:
        got = launch.run(args.framework, n, tasks.timed_steps, (params, batches, 1.0, 1.0),
                         backend_kwargs={"dtype": "float64", "device": "cpu"})  # fmt: skip
        worst = max(float(np.max(np.abs(got["params"][k] - v)) / np.max(np.abs(v)))
                    for k, v in single["params"].items())  # fmt: skip
        print(json.dumps({"framework": args.framework, "workers": n,
                          "median_ms": 1000 * float(np.median(got["seconds"][1:])),
                          "allreduce_bytes": got["allreduce_bytes"],
                          "worst_rel_diff_vs_one_process": worst}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
