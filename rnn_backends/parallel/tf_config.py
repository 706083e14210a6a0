"""TensorFlow's cluster description, ``TF_CONFIG``, read and checked without importing TensorFlow.

``TF_CONFIG`` is the JSON object that ``tf.distribute.MultiWorkerMirroredStrategy`` reads from the
environment: ``{"cluster": {"worker": ["host0:port", "host1:port", ...]}, "task": {"type":
"worker", "index": k}}``, the same cluster on every machine and this machine's own ``index``.
TensorFlow's own errors for a wrong one come late (at the first collective, or as a hang), so
:func:`read` refuses it before TensorFlow starts, naming the value and what to do.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..errors import ConfigError

ENV = "TF_CONFIG"
EXAMPLE = ('{"cluster": {"worker": ["HOST0:12345", "HOST1:12345"]}, '
           '"task": {"type": "worker", "index": 0}}')  # fmt: skip


@dataclass(frozen=True)
class Cluster:
    """This process's place in a multi-worker job: ``workers`` addresses, ``index`` its own."""

    workers: tuple[str, ...]
    index: int


def is_set() -> bool:
    """Whether ``TF_CONFIG`` is in the environment (the multi-process TensorFlow engine)."""
    return ENV in os.environ


def read(workers: int) -> Cluster:
    """The cluster ``TF_CONFIG`` describes, checked against ``workers`` (``--data-parallel N``:
    the total over all machines, one worker per process); :class:`ConfigError` otherwise."""
    text = os.environ.get(ENV, "")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{ENV} is not valid JSON ({exc.msg} at character {exc.pos}): "
                          f"{text!r}; set it like {EXAMPLE}") from None  # fmt: skip
    if not isinstance(config, dict):
        raise ConfigError(f"{ENV} must be a JSON object, got {text!r}; set it like {EXAMPLE}")
    cluster = config.get("cluster")
    jobs = cluster if isinstance(cluster, dict) else {}
    addresses = jobs.get("worker")
    if (not isinstance(addresses, list) or not addresses
            or not all(isinstance(a, str) and a for a in addresses)):  # fmt: skip
        raise ConfigError(f"{ENV} needs \"cluster\": {{\"worker\": [\"host:port\", ...]}}, one "
                          f"address per process; got cluster {cluster!r}")  # fmt: skip
    others = sorted(set(jobs) - {"worker"})
    if others:
        raise ConfigError(f"{ENV} has job(s) {others} besides \"worker\"; this engine runs "
                          "workers only (no chief, evaluator or parameter server): remove them")
    if len(addresses) != workers:
        raise ConfigError(
            f"{ENV} lists {len(addresses)} worker(s) but --data-parallel is {workers}; give "
            f"--data-parallel {len(addresses)} or list {workers} addresses (one process per worker)"
        )
    task = config.get("task")
    if not isinstance(task, dict):
        raise ConfigError(f"{ENV} has no \"task\" (got {task!r}); add \"task\": {{\"type\": "
                          "\"worker\", \"index\": k}} with k this machine's place in the list")
    index = task.get("index")
    if task.get("type") != "worker":
        raise ConfigError(f"{ENV} task type is {task.get('type')!r}; this engine runs workers "
                          "only: set \"type\": \"worker\"")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(addresses):
        raise ConfigError(f"{ENV} task index is {index!r}; it must be an integer from 0 to "
                          f"{len(addresses) - 1}, this machine's place in the worker list")
    return Cluster(tuple(addresses), index)
