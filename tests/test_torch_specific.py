"""What only the PyTorch backend has: on a GPU, the fast step captured as a CUDA graph.

These run only where torch sees a CUDA device (the lead's GPU check); on the CPU they skip with
the reason. The graph must give the oracle's numbers, capture once per shape, and hand back
tensors that a later step does not overwrite.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err

from rnn_backends import reference

torch = pytest.importorskip("torch")

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@needs_gpu
def test_graphed_fast_step_trains_as_the_oracle(small_model):
    from rnn_backends.backends.torch_backend import TorchBackend
    from rnn_backends.backends.torch_graphs import GraphedStep

    _, params, X, Y = small_model
    backend = TorchBackend("float64", device="gpu", variant="fast")
    tensors = backend.prepare(params)
    p, held = dict(params), []
    for k in range(5):
        clip = 0.5 if k % 2 else 0.0  # a new threshold must not need a new capture
        res = backend.train_step(tensors, X, Y, lr=0.7, grad_clip=clip)
        p, loss, norm, _ = reference.train_step(p, X, Y, None, 0.7, clip)
        assert abs(res.loss - loss) / loss <= 1e-10 and abs(res.grad_norm - norm) / norm <= 1e-10
        held.append(backend.export(res.params))
        tensors = res.params
        for name, value in backend.export(tensors).items():
            assert rel_err(value, p[name]) <= 1e-9, (k, name)
    step = backend._cache[("step",)]
    assert isinstance(step, GraphedStep) and step.failure is None and step.captured == 1
    # What a caller held from an earlier step is still that step's result.
    assert not np.array_equal(held[0]["W_hq"], held[-1]["W_hq"])


@needs_gpu
def test_models_the_fast_step_does_not_cover_run_eagerly_on_the_gpu(small_model):
    from rnn_backends import ModelConfig, init_params
    from rnn_backends.backends.torch_backend import TorchBackend

    _, _, X, Y = small_model
    params = init_params(ModelConfig(vocab_size=11, hidden_size=7, cell="gru"), seed=0)
    backend = TorchBackend("float64", device="gpu", variant="fast")
    res = backend.train_step(params, X, Y, lr=1.0, grad_clip=1.0)
    _, loss, _, _ = reference.model_train_step(params, X, Y, None, 1.0, 1.0)
    assert abs(res.loss - loss) / loss <= 1e-10
    assert backend._cache[("step",)].captured == 0
