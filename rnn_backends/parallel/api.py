"""Data-parallel training from Python: :func:`train` is :func:`rnn_backends.train` on N workers of
one framework's engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, TrainConfig
from ..data.corpus import Corpus
from ..train import TrainResult
from . import launch, tasks


def train(
    backend_name: str,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    backend_kwargs: dict[str, Any] | None = None,
    checkpoint_every: int | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
    timeout: float = 24 * 3600.0,
    record: tuple[list[int], Path, int] | None = None,
) -> TrainResult:
    """Train on ``train_config.data_parallel`` workers of ``backend_name``'s engine.

    Arguments:
        backend_kwargs: ``get_backend``'s keywords (variant, device, options); the dtype is
            ``train_config.dtype``.
        out_dir, checkpoint_every, resume, overwrite: as :func:`rnn_backends.train`; worker 0
            alone writes.
        timeout: seconds for the whole job (and, for torch, for every collective).
        record: (steps, folder, states): worker 0 saves those training steps for the compare
            job's float32 replays (:class:`rnn_backends.shadow.Recorder`).
    Returns:
        the :class:`TrainResult` (without ``tensors``: they stayed in the workers).
    Raises:
        WorkerError: a worker died or failed (named in the message), or the job timed out.
    """
    from ..backends.registry import canonical_name

    framework = canonical_name(backend_name)
    kwargs = {**(backend_kwargs or {}), "dtype": train_config.dtype}
    kwargs.setdefault("gru_reset_after", model_config.gru_reset_after)
    out = launch.run(
        framework, train_config.data_parallel, tasks.train_task,
        (corpus, model_config, train_config, out_dir, checkpoint_every, resume, None, overwrite,
         None if record is None else (record[0], str(record[1]), record[2])),
        backend_kwargs=kwargs, timeout=timeout,
    )  # fmt: skip
    where = Path(out["checkpoint"]) if out["checkpoint"] else None
    return TrainResult(out["params"], out["history"], checkpoint=where)


def loss_and_grads(
    backend_name: str,
    workers: int,
    params: dict[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    *,
    backend_kwargs: dict[str, Any] | None = None,
    timeout: float = 3600.0,
) -> tuple[float, dict[str, np.ndarray]]:
    """The mean loss of the batch ``X``, ``Y`` (B, T) and its gradient, as ``workers`` workers of
    the backend's engine compute it: each its rows, averaged by the engine's collective."""
    from ..backends.registry import canonical_name

    return launch.run(canonical_name(backend_name), workers, tasks.loss_and_grads,
                      (params, X, Y), backend_kwargs=backend_kwargs, timeout=timeout)  # fmt: skip
