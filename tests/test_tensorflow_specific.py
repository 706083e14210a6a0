"""What only the TensorFlow backend has: a quiet import, the tf.function training step and its
trace cache, device pinning and TF32, and Keras 3's SimpleRNN as the native layer.

Every number is checked against the NumPy oracle or an identity, never against the backend itself.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import REPO, adamw_steps_match_the_oracle, rel_err  # noqa: E402

from rnn_backends import reference  # noqa: E402
from rnn_backends.backends.tensorflow_backend import TensorflowBackend  # noqa: E402
from rnn_backends.errors import BackendUnavailableError  # noqa: E402

F64_TOL = 1e-10
F32_TOL = 1e-5
# A C++ log line below ERROR, in absl's or TensorFlow's format (written here, not imported).
CPP_INFO_OR_WARNING = re.compile(r"^([IW]\d{4} \d\d:\d\d:|\d{4}-\d\d-\d\d \S+: [IW] )", re.M)


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the repository, without the user's TF log level."""
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), base.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**base, **env}, capture_output=True,
        text=True, timeout=120, check=True,
    )


# --- quiet import ---------------------------------------------------------------------------------

_WORK = """
import json, os, warnings
import numpy as np
from rnn_backends import ModelConfig, get_backend, init_params
backend = get_backend("tensorflow", dtype="float64")
filters = [repr(f) for f in warnings.filters]
p = init_params(ModelConfig(vocab_size=5, hidden_size=3), seed=0)
X = np.zeros((2, 4), dtype=np.int64)
for dtype in ("float32", "float64"):
    for variant in ("fast", "native"):
        b = get_backend("tensorflow", dtype=dtype, variant=variant)
        b.forward(p, X)
        b.loss_and_grads(p, X, X)
        b.train_step(p, X, X, lr=0.1, grad_clip=1.0)
print(json.dumps({"level": os.environ.get("TF_CPP_MIN_LOG_LEVEL"), "filters": filters}))
"""


def test_import_and_first_steps_print_no_cpp_info_or_warning_lines():
    run = _python(_WORK)
    assert not CPP_INFO_OR_WARNING.search(run.stderr), run.stderr
    assert "absl::InitializeLog" not in run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["level"] == "2"
    # Python's warning filters are TensorFlow's own, none added by the adapter.
    plain = _python(
        "import json, tensorflow, warnings; print(json.dumps([repr(f) for f in warnings.filters]))"
    )
    assert out["filters"] == json.loads(plain.stdout.strip().splitlines()[-1])


def test_a_log_level_the_user_chose_is_kept():
    run = _python(_WORK, TF_CPP_MIN_LOG_LEVEL="0")
    assert json.loads(run.stdout.strip().splitlines()[-1])["level"] == "0"


def test_errors_and_plain_text_on_fd2_still_reach_the_user():
    """Only the hidden C++ severities are dropped; errors and anything that is not a log line
    (a Python warning, a traceback) pass through, in order."""
    code = """
import os
from rnn_backends.backends.tensorflow_logs import quiet_cpp_logs
with quiet_cpp_logs():
    os.write(2, b"I0000 00:00:1795795186.053316    7539 a.cc:1] info noise\\n")
    os.write(2, b"2025-09-17 14:44:05.157831: W external/b.cc:2] warning noise\\n")
    os.write(2, b"E0000 00:00:1795795186.053316    7539 c.cc:3] a real error\\n")
    os.write(2, b"UserWarning: something from Python\\n")
    os.write(2, b"F0000 00:00:1795795186.053316    7539 d.cc:4] fatal\\n")
"""
    run = _python(code)
    kept = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert kept == [
        "E0000 00:00:1795795186.053316    7539 c.cc:3] a real error",
        "UserWarning: something from Python",
        "F0000 00:00:1795795186.053316    7539 d.cc:4] fatal",
    ]
    shown = _python(code, TF_CPP_MIN_LOG_LEVEL="0").stderr
    assert "info noise" in shown and "warning noise" in shown


# --- arrays, device and precision -----------------------------------------------------------------


def test_cpu_pinning_dtypes_and_full_float32_precision():
    backend = TensorflowBackend("float32", device="cpu")
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    ids = backend.asarray(np.arange(6).reshape(2, 3))
    floats = backend.asarray(np.ones((2, 3)))
    assert ids.dtype.is_integer and floats.dtype == tf.float32
    assert "CPU" in ids.device and "CPU" in floats.device


def test_version_is_the_installed_distributions():
    dists = importlib.metadata.packages_distributions()["tensorflow"]
    versions = {importlib.metadata.version(d) for d in dists}
    assert TensorflowBackend("float64", device="cpu").version() in versions


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is present")
def test_asking_for_a_missing_gpu_is_a_clear_error():
    with pytest.raises(BackendUnavailableError, match="no GPU"):
        TensorflowBackend("float64", device="gpu")


# --- compiled step --------------------------------------------------------------------------------


def _traces(backend) -> int:
    """How many graphs the backend's compiled training steps have traced."""
    return sum(fn.function.experimental_get_tracing_count() for fn in backend._cache.values()
               if hasattr(fn, "function"))


@pytest.mark.parametrize("variant", TensorflowBackend.variants)
def test_compiled_step_matches_oracle_each_call_without_retracing(variant, small_model):
    """Six steps with carried state, changing learning rates and clip thresholds (clipping off
    included): one trace, and the oracle's numbers every step."""
    _, params, X, Y = small_model
    backend = TensorflowBackend("float64", device="cpu", variant=variant)
    native = backend.prepare(params)
    state = None
    oracle, o_state = dict(params), None
    for lr, clip in ((0.5, 1.5), (0.5, 0.05), (0.2, 0), (1.0, 1.5), (0.3, 9.0), (0.3, 0)):
        res = backend.train_step(native, X, Y, state, lr=lr, grad_clip=clip)
        oracle, o_loss, o_norm, o_state = reference.train_step(oracle, X, Y, o_state, lr, clip)
        native, state = res.params, res.state
        assert abs(res.loss - o_loss) / o_loss <= F64_TOL
        assert abs(res.grad_norm - o_norm) / o_norm <= F64_TOL
        assert rel_err(backend.to_numpy(state[0]), o_state) <= F64_TOL
        got = backend.export(native)
        for k in params:
            assert rel_err(got[k], oracle[k]) <= F64_TOL, k
    # lr and the clip threshold are tensor arguments: neither a schedule nor a new threshold
    # retraces.
    assert _traces(backend) == 1

    # A new batch shape is a new graph, traced once and then reused.
    for _ in range(2):
        backend.train_step(native, X[:, :3], Y[:, :3], lr=0.1, grad_clip=0)
    assert _traces(backend) == 2


@pytest.mark.parametrize("variant", ["fast", "native"])
def test_compiled_step_with_adam_and_a_schedule_does_not_retrace(variant, small_model):
    """The learning rate, the update count (Adam's bias corrections) and the clip threshold are
    tensor arguments: six AdamW steps at changing rates and thresholds trace one graph and match
    the oracle; the optimizer is static, so another one traces its own."""

    _, params, X, Y = small_model
    backend = TensorflowBackend("float64", device="cpu", variant=variant)
    native, _ = adamw_steps_match_the_oracle(backend, params, X, Y, F64_TOL)
    assert _traces(backend) == 1
    for lr in (0.1, 0.2):
        backend.train_step(native, X, Y, lr=lr, grad_clip=1.0, optimizer="momentum")
    assert _traces(backend) == 2


def test_compiled_step_float32_matches_oracle(small_model):
    _, params, X, Y = small_model
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    backend = TensorflowBackend("float32", device="cpu", variant="fast")
    res = backend.train_step(p32, X, Y, lr=0.5, grad_clip=1.0)
    oracle, o_loss, o_norm, _ = reference.train_step(
        {k: v.astype(np.float64) for k, v in p32.items()}, X, Y, None, 0.5, 1.0
    )
    assert abs(res.loss - o_loss) / o_loss <= F32_TOL
    assert abs(res.grad_norm - o_norm) / o_norm <= F32_TOL
    got = backend.export(res.params)
    for k in params:
        assert got[k].dtype == np.float32
        assert rel_err(got[k], oracle[k]) <= F32_TOL, k


# --- native layer: keras.layers.SimpleRNN ---------------------------------------------------------


def _relu_rnn_last_state(params, X, h0):
    """The same recurrence with relu: what a wrongly configured layer would compute."""
    h = h0
    for t in range(X.shape[1]):
        h = np.maximum(params["W_xh"][X[:, t]] + h @ params["W_hh"] + params["b_h"], 0.0)
    return h


@pytest.mark.parametrize("dtype,tol", [("float64", F64_TOL), ("float32", F32_TOL)])
def test_keras_simple_rnn_is_tanh_and_matches_oracle_from_a_nonzero_state(dtype, tol, small_model):
    import keras

    cfg, params, X, Y = small_model
    params = {k: v.astype(dtype) for k, v in params.items()}
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    h0 = np.random.default_rng(9).uniform(-0.9, 0.9, size=(X.shape[0], cfg.hidden_size))
    backend = TensorflowBackend(dtype, device="cpu", variant="native")

    logits, h_last, _ = reference.forward(p64, X, h0)
    assert rel_err(_relu_rnn_last_state(p64, X, h0), h_last) > 1e-2  # relu would be caught
    got_logits, (got_h,) = backend.forward(params, X, (h0[None],))
    assert rel_err(got_logits, logits) <= tol
    assert rel_err(got_h[0], h_last) <= tol

    # Gradients reach the canonical tensors through the layer, including the recurrent kernel.
    loss, grads, _ = reference.loss_and_grads(p64, X, Y, h0)
    got_loss, got_grads = backend.loss_and_grads(params, X, Y, (h0[None],))
    assert abs(got_loss - loss) / loss <= tol
    for k in grads:
        assert rel_err(got_grads[k], grads[k]) <= tol, k

    layer = backend._keras_layers(backend.model(params))[0]
    assert isinstance(layer, keras.layers.SimpleRNN)
    assert layer.cell.activation is keras.activations.tanh
    assert layer.return_sequences and layer.return_state and not layer.go_backwards
    # Its own variables never stood in for the canonical weights (they keep Keras's init).
    assert rel_err(layer.cell.kernel.numpy(), params["W_xh"]) > 1e-3
