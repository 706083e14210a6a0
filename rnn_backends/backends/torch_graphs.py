"""PyTorch on a GPU: the fast training step captured as a CUDA graph and replayed.

At the textbook's size a fast step is ~150 small kernels (two per time step each way, the output
layer, clipping and SGD); launched one by one from Python they cost ~5 us each, several times
their run time on an H100-class GPU. A CUDA graph launches them all at once. The step is captured
per input shape (parameter, batch and state shapes, dtypes) on static buffers: every call copies
its inputs in, replays, and clones the outputs, so the tensors a caller holds are never
overwritten by a later step. The learning rate and clipping threshold live in 0-d tensors, so a
new value needs no new capture.

Only the fast step of the one-layer tanh RNN is captured. Other models (where
:func:`fastpath.check_applies` refuses) run their step eagerly as before, and if a capture fails
the step warns once and runs eagerly from then on; the numbers are the same either way (the graph
replays the very kernels the eager step launches).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from .. import fastpath

Step = Callable[..., tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]]


class GraphedStep:
    """``step(params, X, Y, h0, lr, max_norm)`` (the backend's pure ``_step``) replayed from a
    CUDA graph per input signature; same arguments and results."""

    def __init__(self, step: Step, device: torch.device) -> None:
        self.step, self.device = step, device
        self._graphs: dict[tuple[Any, ...], _Captured] = {}
        self.failure: str | None = None  # why capturing failed, once it has

    def __call__(self, params, X, Y, h0, lr, max_norm):
        try:
            fastpath.check_applies(params)
        except NotImplementedError:
            return self.step(params, X, Y, h0, lr, max_norm)  # the generic step, eagerly
        if self.failure is not None:
            return self.step(params, X, Y, h0, lr, max_norm)
        key = (*((k, tuple(v.shape), v.dtype) for k, v in params.items()),
               tuple(X.shape), tuple(Y.shape), tuple(h0.shape))  # fmt: skip
        if key not in self._graphs:
            try:
                self._graphs[key] = _Captured(self.step, params, X, Y, h0, lr, max_norm)
            except RuntimeError as exc:
                self.failure = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"capturing the fast step as a CUDA graph failed ({self.failure});"
                              " it runs eagerly instead", RuntimeWarning, stacklevel=2)
                torch.cuda.synchronize(self.device)
                return self.step(params, X, Y, h0, lr, max_norm)
        return self._graphs[key].run(params, X, Y, h0, lr, max_norm)

    @property
    def captured(self) -> int:
        """How many input signatures have a graph."""
        return len(self._graphs)


class _Captured:
    """One captured step and its static input buffers."""

    def __init__(self, step: Step, params, X, Y, h0, lr, max_norm) -> None:
        with torch.no_grad():
            self.params = {k: v.detach().clone() for k, v in params.items()}
            self.X, self.Y, self.h0 = X.clone(), Y.clone(), h0.detach().clone()
            self.lr = torch.tensor(float(lr), dtype=h0.dtype, device=h0.device)
            self.max_norm = torch.tensor(float(max_norm), dtype=h0.dtype, device=h0.device)
        args = (self.params, self.X, self.Y, self.h0, self.lr, self.max_norm)
        # Warm up on a side stream (cuBLAS handles and workspaces are made lazily, and making
        # them is not allowed during a capture), then capture.
        side = torch.cuda.Stream(device=h0.device)
        side.wait_stream(torch.cuda.current_stream(h0.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                step(*args)
        torch.cuda.current_stream(h0.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = step(*args)

    def run(self, params, X, Y, h0, lr, max_norm):
        with torch.no_grad():
            for k, p in params.items():
                self.params[k].copy_(p)
            self.X.copy_(X)
            self.Y.copy_(Y)
            self.h0.copy_(h0)
            self.lr.fill_(float(lr))
            self.max_norm.fill_(float(max_norm))
            self.graph.replay()
            new, loss, norm, h_last = self.out
            # Clones: the graph's outputs are overwritten by the next replay.
            return ({k: v.clone() for k, v in new.items()}, loss.clone(), norm.clone(),
                    h_last.clone())
