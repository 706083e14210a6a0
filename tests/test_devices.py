"""Device labels: one parser for every place that names a device, and clear refusals."""

from __future__ import annotations

import pytest
from conftest import make_backend

from rnn_backends import get_backend
from rnn_backends.backends.base import Device, parse_device
from rnn_backends.cli import main
from rnn_backends.errors import BackendUnavailableError, ConfigError


@pytest.mark.parametrize(
    "label,kind,index",
    [(None, None, None), ("cpu", "cpu", None), ("CPU:0", "cpu", None), ("gpu", "gpu", None),
     ("cuda", "gpu", None), ("cuda:0", "gpu", 0), ("gpu:1", "gpu", 1), (" GPU:12 ", "gpu", 12),
     ("tpu", "tpu", None), ("tpu:3", "tpu", 3)],
)  # fmt: skip
def test_every_label_parses(label, kind, index):
    assert parse_device(label) == Device(kind, index)


@pytest.mark.parametrize("label", ["xpu", "gpu:", "gpu:one", "cuda:-1", "cpu:1", "", "gpu:1:2"])
def test_bad_labels_are_one_clear_error(label):
    with pytest.raises(ConfigError, match="device must be cpu, gpu|one CPU device"):
        parse_device(label)


def test_cli_takes_every_label_and_refuses_bad_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--backend", "numpy", "--device", "xpu"])
    assert exit_.value.code == 2
    assert "device must be cpu, gpu (or cuda), tpu" in capsys.readouterr().err
    # A valid label reaches the backend, which refuses it with the reason (the oracle is CPU-only).
    assert main(["generate", "--checkpoint", "/nonexistent", "--prefix", "a",
                 "--device", "cuda:0"]) == 2  # fmt: skip


def test_the_oracle_runs_on_the_cpu_only():
    assert get_backend("numpy", device="cpu:0").device == "cpu"
    with pytest.raises(ConfigError, match="CPU only"):
        get_backend("numpy", device="gpu:1")


def test_an_absent_device_says_which_what_is_present_and_what_to_do(framework_name):
    backend = make_backend(framework_name)
    if backend._gpu_count() > 0:  # noqa: SLF001
        pytest.skip(f"{framework_name} sees a GPU here")
    for label in ("gpu", "cuda:0", "gpu:1"):
        with pytest.raises(BackendUnavailableError, match=r"asked for, but .* sees no GPU; "):
            get_backend(framework_name, device=label)
    with pytest.raises(BackendUnavailableError, match="TPU"):
        get_backend(framework_name, device="tpu")
