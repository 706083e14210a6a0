"""Data-parallel training (``rnn_backends.parallel``) against one process and the oracle.

Every framework's engine, with 2 and 4 workers, in float64: the averaged gradient at step 0 equals
the single-process gradient to 1e-10, and 50 steps with clipping engaged (and the state carried
from batch to batch, each worker carrying its own rows) land on the single-process weights and
state to 1e-9. A killed worker fails the job with its name, quickly; the run then resumes from
rank 0's last checkpoint and ends where an uninterrupted run ends. The workers are fresh processes
(the engines need them), so the models are tiny and the runs short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_backend, rel_err

from rnn_backends import ModelConfig, TrainConfig, init_params, load_checkpoint, load_corpus
from rnn_backends.checkpointing import read_metadata
from rnn_backends.errors import ConfigError, UserError, WorkerError
from rnn_backends.parallel import launch, tasks
from rnn_backends.parallel.common import flatten
from rnn_backends.parallel.rows import row_slice, shard_rows
from rnn_backends.train import train

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300.0  # seconds for one data-parallel job; a hang fails the test instead of CI

# Two cases per framework: the tanh RNN on its fast step with plain SGD, and an LSTM on autodiff
# with momentum (slots that must stay in step across workers; a carry of two state tensors).
CASES = {
    2: dict(cell="rnn", num_layers=1, optimizer="sgd", lr=0.5, clip=0.3),
    4: dict(cell="lstm", num_layers=1, optimizer="momentum", lr=0.2, clip=0.12),
}
# Each clip is below most steps' gradient norm in its case (checked below): the clip is engaged.
STEPS = 50


# --- the split, framework-free -------------------------------------------------------------------


def test_uneven_split_is_refused_with_the_values_that_fit():
    with pytest.raises(ConfigError, match=r"30 .* 4 .*\(1, 2, 3, 5, 6, 10, 15, 30\).* 32"):
        TrainConfig(batch_size=30, data_parallel=4)
    with pytest.raises(ConfigError, match="data_parallel must be a positive integer, got 0"):
        TrainConfig(data_parallel=0)
    assert shard_rows(32, 4) == 8


def test_rows_and_trees():
    """Row slices tile the batch in order, for ids (B, T) and carries (S, B, H); a tree of tuples,
    dicts and NamedTuples comes back as it was."""
    x = np.arange(2 * 8 * 3).reshape(2, 8, 3)
    assert np.array_equal(np.concatenate([row_slice(x, r, 2) for r in range(4)], axis=-2), x)
    ids = np.arange(8 * 5).reshape(8, 5)
    assert np.array_equal(row_slice(ids, 1, 4), ids[4:])
    from rnn_backends.optim import Rates

    tree = ({"a": 1, "b": (2, 3)}, Rates(4, 5, 6, 7), [8])
    leaves, rebuild = flatten(tree)
    assert leaves == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rebuild(leaves) == tree


def test_a_backend_without_an_engine_is_refused():
    with pytest.raises(UserError, match="no data-parallel engine for 'numpy'"):
        launch.run("numpy", 2, tasks.trajectory, timeout=TIMEOUT)


TWO = ["127.0.0.1:1", "127.0.0.1:2"]


@pytest.mark.parametrize("tf_config, message", [
    ('{"cluster": {"worker": ["a:1"', r"TF_CONFIG is not valid JSON .*set it like \{"),
    (json.dumps({"cluster": {"worker": [*TWO, "127.0.0.1:3"]},
                 "task": {"type": "worker", "index": 0}}),
     r"TF_CONFIG lists 3 worker\(s\) but --data-parallel is 2; give --data-parallel 3"),
    (json.dumps({"cluster": {"worker": TWO}}), r"TF_CONFIG has no \"task\".*\"index\": k"),
    (json.dumps({"cluster": {"worker": TWO}, "task": {"type": "worker", "index": 2}}),
     r"task index is 2; it must be an integer from 0 to 1"),
    (json.dumps({"cluster": {"chief": TWO[:1], "worker": TWO}, "task": {"type": "worker",
                                                                      "index": 0}}),
     r"job\(s\) \['chief'\] besides \"worker\""),
    (json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}),
     r"needs \"cluster\": \{\"worker\""),
])  # fmt: skip
def test_a_bad_tf_config_is_refused_before_tensorflow_starts(monkeypatch, capsys, tmp_path,
                                                              tf_config, message):  # fmt: skip
    """TensorFlow's multi-worker engine reads TF_CONFIG; a wrong one is refused with its value and
    the fix, before TensorFlow is imported (this core session has none to import), and the CLI
    exits 2 with that one line."""
    from rnn_backends.cli import main

    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=message):
        launch.run("tensorflow", 2, tasks.trajectory, timeout=TIMEOUT)
    out = tmp_path / "run"
    assert main(["train", "--backend", "tensorflow", "--data-parallel", "2", "--out", str(out),
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TF_CONFIG" in err[0], err
    assert not (out / "checkpoint").exists()


# --- against one process -------------------------------------------------------------------------


def _case(workers: int) -> tuple[ModelConfig, dict, list, dict]:
    case = CASES[workers]
    model = ModelConfig(vocab_size=11, hidden_size=6, cell=case["cell"],
                        num_layers=case["num_layers"], init_sigma=0.4)  # fmt: skip
    params = init_params(model, seed=3)
    rng = np.random.default_rng(5)
    for k in params:
        if k.startswith("b_") or ".b_" in k or k.endswith("b_q"):
            params[k] = rng.normal(0, 0.3, params[k].shape)  # gradients far from zero
    batches = [(rng.integers(0, 11, (8, 5)), rng.integers(0, 11, (8, 5))) for _ in range(STEPS)]
    return model, params, batches, case


def _single_process(backend, params, batches, case) -> dict:
    loss0, grads0 = backend.loss_and_grads(params, *batches[0])
    tensors, state, opt_state, norms = backend.prepare(params), None, None, []
    for X, Y in batches:
        res = backend.train_step(tensors, X, Y, state, lr=case["lr"], grad_clip=case["clip"],
                                 optimizer=case["optimizer"], opt_state=opt_state)  # fmt: skip
        tensors, state, opt_state = res.params, res.state, res.opt_state
        norms.append(res.grad_norm)
    # The oracle's state is the public tuple already; a framework's is its carry tensor.
    final = state if backend.name == "numpy" else backend._public_state(tensors, state[0])
    return {"loss0": loss0, "grads0": grads0, "params": backend.export(tensors),
            "state": final, "norms": norms}  # fmt: skip


@pytest.mark.parametrize("workers", [2, 4])
def test_data_parallel_equals_one_process(framework_name, workers):
    model, params, batches, case = _case(workers)
    got = launch.run(
        framework_name, workers, tasks.trajectory,
        (params, batches, case["lr"], case["clip"], case["optimizer"], True),
        backend_kwargs={"dtype": "float64", "device": "cpu"}, timeout=TIMEOUT,
    )  # fmt: skip
    one = _single_process(make_backend(framework_name), params, batches, case)
    oracle = _single_process(make_backend("numpy"), params, batches, case)
    engaged = sum(n > case["clip"] for n in oracle["norms"])
    assert engaged > STEPS // 2, f"the clip acted on {engaged} of {STEPS} steps only"
    for ref in (one, oracle):
        assert abs(got["loss0"] - ref["loss0"]) <= 1e-10 * abs(ref["loss0"])
        for k in params:
            assert rel_err(got["grads0"][k], ref["grads0"][k]) <= 1e-10, k
            assert rel_err(got["params"][k], ref["params"][k]) <= 1e-9, k
        np.testing.assert_allclose(got["norms"], ref["norms"], rtol=1e-9)
        for a, b in zip(got["state"], ref["state"], strict=True):
            assert rel_err(a, b) <= 1e-9
    # What crosses the collective per step: every gradient and the loss, in float64.
    assert got["allreduce_bytes"] == 8 * (1 + sum(p.size for p in params.values()))


def test_float32_stays_float32(framework_name):
    """The engines keep a float32 run in float32 (a Python learning rate turned into a float64
    array once promoted every weight, and then JAX's scan refused the carry)."""
    model, params, batches, case = _case(4)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    got = launch.run(
        framework_name, 2, tasks.trajectory,
        (params, batches[:3], case["lr"], case["clip"], case["optimizer"], True),
        backend_kwargs={"dtype": "float32", "device": "cpu"}, timeout=TIMEOUT,
    )  # fmt: skip
    assert {str(v.dtype) for v in got["params"].values()} == {"float32"}
    assert {str(v.dtype) for v in got["state"]} == {"float32"}
    assert np.isfinite(got["losses"]).all()


# --- failure and resume --------------------------------------------------------------------------


def _train_setup() -> tuple:
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=8)
    cfg = TrainConfig(batch_size=8, num_steps=6, num_train=600, num_val=48, max_epochs=2,
                      dtype="float64", batching="sequential", lr=1.0, grad_clip=0.5, seed=2,
                      data_parallel=2)  # fmt: skip
    return corpus, model, cfg


def test_killed_worker_fails_with_its_name_then_resume_matches(framework_name, tmp_path):
    """SIGKILL of one worker after update 5: the job fails within seconds naming that worker;
    resuming from rank 0's checkpoint ends where one uninterrupted single-process run ends."""
    corpus, model, cfg = _train_setup()
    out = tmp_path / "run"
    victim = 1 if framework_name == "torch" else 0  # torch: one process per worker
    kwargs = {"device": "cpu", "dtype": "float64"}
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as info:
        launch.run(framework_name, 2, tasks.train_task,
                   (corpus, model, cfg, out, 2, None, (victim, 5)),
                   backend_kwargs=kwargs, timeout=TIMEOUT)  # fmt: skip
    assert time.monotonic() - t0 < TIMEOUT / 2
    who = "worker 1 of 2" if framework_name == "torch" else "worker process"
    assert who in str(info.value) and "SIGKILL" in str(info.value), str(info.value)
    # Step 4, or 6 when the survivors finished update 5 (the victim took part in its all-reduce)
    # and rank 0 wrote its checkpoint before it was stopped.
    assert read_metadata(out / "checkpoint")["step"] in (4, 6)
    resumed = launch.run(framework_name, 2, tasks.train_task,
                         (corpus, model, cfg, out, 2, out / "checkpoint"),
                         backend_kwargs=kwargs, timeout=TIMEOUT)  # fmt: skip
    single = TrainConfig(**{**cfg.to_dict(), "data_parallel": 1})
    ref = train(make_backend(framework_name), corpus, model, single, progress=False)
    assert len(ref.history["step_loss"]) > 6
    np.testing.assert_allclose(resumed["history"]["step_loss"], ref.history["step_loss"],
                               rtol=1e-9)  # fmt: skip
    for k, v in ref.params.items():
        assert rel_err(resumed["params"][k], v) <= 1e-9, k


TRAIN_ARGS = ["train", "--data-parallel", "2", "--batch-size", "8", "--num-steps", "6",
              "--num-train", "600", "--num-val", "48", "--epochs", "2", "--dtype", "float64",
              "--batching", "sequential", "--lr", "1", "--grad-clip", "0.5", "--seed", "2",
              "--hidden-size", "8", "--no-progress", "--num-preds", "0"]  # fmt: skip


def _two_nodes(commands: list[list[str]], envs: list[dict[str, str]],
               check: bool = True) -> tuple[list[int], list[str]]:  # fmt: skip
    """Run one command per "node" at once, within the timeout; their exit statuses and outputs
    (``check``: both must succeed)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    nodes = [subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": path, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in zip(commands, envs, strict=True)]  # fmt: skip
    try:
        logs = [p.communicate(timeout=TIMEOUT)[0] for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    codes = [p.returncode for p in nodes]
    assert not check or codes == [0, 0], logs
    return codes, logs


def _tf_config_envs() -> list[dict[str, str]]:
    """TF_CONFIG of a two-worker cluster on this machine, for worker 0 and worker 1."""
    cluster = {"worker": [f"127.0.0.1:{launch.free_port()}" for _ in range(2)]}
    return [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": r}}),
             "CUDA_VISIBLE_DEVICES": "-1"} for r in range(2)]  # fmt: skip


def test_two_nodes_as_two_processes(framework_name, tmp_path):
    """Two launches, one per "node", joined over TCP as on two machines (torch: torchrun
    --nnodes 2; JAX: jax.distributed with a coordinator address; TensorFlow:
    MultiWorkerMirroredStrategy with TF_CONFIG); node 0 alone writes the checkpoint, which equals
    one process's run. MXNet's dist_sync is not run here (README: Data parallelism)."""
    corpus, model, cfg = _train_setup()
    port = str(launch.free_port())
    # One output folder per node, as on two machines: node 1's must stay without a checkpoint.
    outs = [tmp_path / f"node{r}" for r in range(2)]
    node_args = [[*TRAIN_ARGS, "--backend", framework_name, "--out", str(o)] for o in outs]
    if framework_name == "torch":
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        commands = [[torchrun, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(r),
                     "--master-addr", "127.0.0.1", "--master-port", port, "-m", "rnn_backends",
                     *node_args[r]] for r in range(2)]  # fmt: skip
        envs = [{}, {}]
    elif framework_name == "jax":
        commands = [[sys.executable, "-m", "rnn_backends", *args] for args in node_args]
        envs = [{"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
                 "JAX_PROCESS_ID": str(r),
                 "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
                for r in range(2)]  # fmt: skip
    elif framework_name == "tensorflow":
        commands = [[sys.executable, "-m", "rnn_backends", *args] for args in node_args]
        envs = _tf_config_envs()
    else:
        pytest.skip(f"no two-process launch of {framework_name} is tested here")
    _two_nodes(commands, envs)
    single = TrainConfig(**{**cfg.to_dict(), "data_parallel": 1})
    ref = train(make_backend(framework_name), corpus, model, single, out_dir=tmp_path / "one",
                progress=False)  # fmt: skip
    assert not (outs[1] / "checkpoint").exists()
    ckpt, one = load_checkpoint(outs[0] / "checkpoint"), load_checkpoint(ref.checkpoint)
    assert ckpt.step == one.step == len(ref.history["step_loss"])
    for k, v in one.params.items():
        assert rel_err(ckpt.params[k], v) <= 1e-9, k
    assert ckpt.arrays.keys() == one.arrays.keys()
    for k, v in one.arrays.items():  # the carried state of all rows, if the run ended with one
        assert rel_err(ckpt.arrays[k], v) <= 1e-9, k


# Each "node" of the TensorFlow test below: launch.run with TF_CONFIG set is one worker of the
# cluster; worker 1 may kill itself after an update (tasks.train_task's ``kill``).
TF_NODE = """
import pickle, sys
from rnn_backends.errors import WorkerError
from rnn_backends.parallel import launch, tasks
with open(sys.argv[1], "rb") as f:
    args = pickle.load(f)
try:
    out = launch.run("tensorflow", 2, tasks.train_task, args, timeout=float(sys.argv[2]),
                     backend_kwargs={"device": "cpu", "dtype": "float64"})
except WorkerError as exc:
    print("WorkerError:", exc)
    sys.exit(1)
if out["checkpoint"]:
    with open(sys.argv[1] + ".out", "wb") as f:
        pickle.dump(out, f)
"""


def test_tf_config_worker_killed_then_resumed(framework_name, tmp_path):
    """MultiWorkerMirroredStrategy, two processes: worker 1 SIGKILLs itself after update 5;
    worker 0 fails within seconds naming worker 1 (its address), not hanging; both resume from
    worker 0's checkpoint and end where one uninterrupted single-process run ends (1e-9)."""
    if framework_name != "tensorflow":
        pytest.skip("the TF_CONFIG engine is TensorFlow's")
    import pickle

    corpus, model, cfg = _train_setup()
    out = tmp_path / "run"

    def nodes(args: tuple, check: bool) -> tuple[list[int], list[str]]:
        path = tmp_path / "args.pkl"
        path.write_bytes(pickle.dumps(args))
        envs = _tf_config_envs()
        command = [sys.executable, "-c", TF_NODE, str(path), str(TIMEOUT)]
        return _two_nodes([command, command], envs, check)

    t0 = time.monotonic()
    codes, logs = nodes((corpus, model, cfg, out, 2, None, (1, 5)), check=False)
    assert time.monotonic() - t0 < TIMEOUT / 2
    assert codes == [1, -9], (codes, logs)
    assert "WorkerError: data-parallel worker 0 of 2" in logs[0], logs[0]
    assert "worker 1 of 2 (127.0.0.1:" in logs[0], logs[0]
    assert read_metadata(out / "checkpoint")["step"] in (4, 6)
    nodes((corpus, model, cfg, out, 2, out / "checkpoint"), check=True)
    resumed = pickle.loads((tmp_path / "args.pkl.out").read_bytes())
    single = TrainConfig(**{**cfg.to_dict(), "data_parallel": 1})
    ref = train(make_backend(framework_name), corpus, model, single, progress=False)
    np.testing.assert_allclose(resumed["history"]["step_loss"], ref.history["step_loss"],
                               rtol=1e-9)  # fmt: skip
    for k, v in ref.params.items():
        assert rel_err(resumed["params"][k], v) <= 1e-9, k


# --- float32: the compare job's error model judges a data-parallel run --------------------------


def test_float32_data_parallel_job_is_judged_by_the_error_model(framework_name, tmp_path):
    """A float32 compare job with ``--data-parallel 2`` passes the float32 verdict, including the
    replayed steps that worker 0 recorded (the global batch's start and end). Those records are
    really judged: the same job fails, at that step and naming that framework and parameter, once
    one recorded update is off by a relative 1e-3 (what an engine that mis-averages one tensor
    would leave)."""
    from rnn_backends import compare, shadow

    tiny = {"hidden_size": 16, "batch_size": 32, "num_steps": 8, "max_epochs": 1,
            "num_train": 128, "num_val": 64, "data_parallel": 2}  # fmt: skip
    spec = compare.default_spec("default", "quick", tiny, dtype="float32", num_preds=10)
    spec.checks = {"trajectory": True, "members": 3, "sampled_steps": 3}
    report = compare.run_compare(tmp_path, [framework_name], spec, log=lambda *_: None)
    assert report["passed"], report["failures"]
    row = next(r for r in report["frameworks"] if r["backend"] == framework_name)
    assert row["data_parallel"] == 2
    replayed = {c["step"] for c in row["checks"] if c["what"] == "W_hh after the step"}
    assert replayed == {0, 1, 2}, replayed

    record = shadow.load_index(tmp_path / framework_name)[1]
    path = tmp_path / framework_name / record["file"]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    before, after = arrays["before/params/W_hh"], arrays["after/params/W_hh"]
    arrays["after/params/W_hh"] = (before + (after - before) * (1 + 1e-3)).astype(after.dtype)
    np.savez(path, **arrays)
    saved = compare._read_spec(tmp_path)
    status = {n: "ok" for n in saved.frameworks}
    failures = compare.judge(tmp_path, saved.frameworks, status, saved, 0.0)["failures"]
    assert any(f.startswith(f"{framework_name}: W_hh after the step at step 1 differs")
               for f in failures), failures  # fmt: skip
