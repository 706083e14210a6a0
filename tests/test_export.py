"""Exports against the NumPy oracle: every target's model object computes the oracle's logits and
final state (float64 <= 1e-10, float32 <= 1e-5, relative per tensor, as the suite), a file
reloaded in a fresh process gives the same logits, the safetensors file follows the format (read
by a parser written here from the format's description, and by the ``safetensors`` package), and
the command's errors exit 2 with one line.

Ownership: the model-object tests take ``framework_name`` (torch -> torch, tensorflow -> keras,
jax -> flax, mxnet -> gluon) and run in that framework's session; the framework-free files and the
CLI's errors run in the core session.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import rel_err

from rnn_backends import ModelConfig, init_params, reference, save_checkpoint
from rnn_backends.checkpointing import Checkpoint
from rnn_backends.cli import main
from rnn_backends.config import CELL_SPECS
from rnn_backends.data.vocab import Vocab
from rnn_backends.errors import BackendUnavailableError, CheckpointError, ConfigError
from rnn_backends.export import read_safetensors, save
from rnn_backends.params import param_shapes

F64_TOL = 1e-10
F32_TOL = 1e-5  # the suite's float32 tolerance (until the float32 error model lands)

# (cell, layers, bidirectional, gru_reset_after): every cell, both GRU conventions, depth, and
# one bidirectional model (checkpoints can hold them, though training refuses them).
MODELS = {
    "rnn": ("rnn", 1, False, True),
    "gru": ("gru", 1, False, True),
    "gru_before": ("gru", 1, False, False),
    "lstm": ("lstm", 1, False, True),
    "rnn_2l": ("rnn", 2, False, True),
    "gru_2l": ("gru", 2, False, True),
    "lstm_2l": ("lstm", 2, False, True),
    "gru_2l_bi": ("gru", 2, True, True),
    "lstm_2l_bi": ("lstm", 2, True, True),
}
FLOAT32 = ("rnn", "gru_2l", "lstm_2l")
TARGET_OF = {"torch": "torch", "tensorflow": "keras", "jax": "flax", "mxnet": "gluon"}
V, H, B, T = 7, 5, 3, 6
TOKENS = ["<unk>", " ", "a", "b", "c", "d", "e"]


def _checkpoint(key: str, directory: Path, dtype: str = "float64", seed: int = 0):
    """A checkpoint of model ``key`` with weights large enough and nonzero biases, so that every
    term of every gate shows in the logits; returns (directory, config, params)."""
    cell, layers, bi, after = MODELS[key]
    cfg = ModelConfig(V, H, cell=cell, num_layers=layers, bidirectional=bi,
                      gru_reset_after=after, init_sigma=0.6)  # fmt: skip
    params = init_params(cfg, seed)
    rng = np.random.default_rng(seed + 7)
    for k in params:
        if k.split(".")[-1].startswith("b_"):
            params[k] = rng.normal(0, 0.4, params[k].shape)
    params = {k: v.astype(dtype) for k, v in params.items()}
    ckpt = Checkpoint(params=params, model_config=cfg, vocab=Vocab.from_tokens_list(TOKENS))
    save_checkpoint(directory, ckpt)
    return directory, cfg, params


def _inputs(cfg: ModelConfig, seed: int = 1):
    """Ids (B, T) and a random initial state in the package's layout (tuple of (L*D, B, H))."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, V, (B, T))
    LD = cfg.num_layers * cfg.num_directions
    state = tuple(rng.uniform(-0.8, 0.8, (LD, B, H)) for _ in CELL_SPECS[cfg.cell].states)
    return X, state


def _oracle(params, cfg, X, state):
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    logits, final, _ = reference.model_forward(p64, X, state, gru_reset_after=cfg.gru_reset_after)
    return logits, final


def _target(framework_name: str | None) -> str:
    if framework_name not in TARGET_OF:
        pytest.skip(f"no export target for {framework_name}")
    return TARGET_OF[framework_name]


# --- running each target's model object: ids and a state in, logits and a state out ------------


def _run_torch(model, X, state, dtype):
    import torch

    if state is not None:
        state = tuple(torch.as_tensor(s, dtype=getattr(torch, dtype)) for s in state)
        state = state if len(state) == 2 else state[0]  # torch's own form: h, or (h, c)
    with torch.no_grad():
        logits, final = model(torch.as_tensor(X), state)
    final = final if isinstance(final, tuple) else (final,)
    return logits.numpy(), tuple(f.numpy() for f in final)


def _run_keras(model, X, state, dtype):
    names = ("h", "c")
    if state is None:
        out = model(X.astype(np.int32))
        n = sum(name in out for name in names)
    else:  # Keras is batch-major: states (B, L * D, H)
        feed = {n: np.swapaxes(s, 0, 1).astype(dtype) for n, s in zip(names, state, strict=False)}
        out = model({"ids": X.astype(np.int32), **feed})
        n = len(state)
    return np.asarray(out["logits"]), tuple(np.swapaxes(np.asarray(out[k]), 0, 1)
                                            for k in names[:n])  # fmt: skip


def _run_flax(model, X, state, dtype):
    import jax

    module, variables = model
    state = None if state is None else tuple(s.astype(dtype) for s in state)
    # Compiled, as a JAX user would run it (and quicker than Flax's eager scan here).
    logits, final = jax.jit(module.apply)(variables, X, state)
    return np.asarray(logits), tuple(np.asarray(f) for f in final)


def _run_gluon(net, X, state, dtype):
    from mxnet import np as mnp

    begin = (
        net.begin_state(X.shape[0]) if state is None
        else [mnp.array(s, dtype=dtype) for s in state]
    )  # fmt: skip
    logits, *final = net(mnp.array(X, dtype="int64"), *begin)
    return logits.asnumpy(), tuple(f.asnumpy() for f in final)


RUN = {"torch": _run_torch, "keras": _run_keras, "flax": _run_flax, "gluon": _run_gluon}


def _build(target: str, directory: Path, state_input: bool):
    from rnn_backends import export

    if target == "keras":
        return export.to_keras(directory, state_input=state_input)
    return getattr(export, f"to_{target}")(directory)


# --- each framework's model object against the oracle -----------------------------------------


CASES = [(k, "float64") for k in MODELS] + [(k, "float32") for k in FLOAT32]


@pytest.mark.parametrize("key,dtype", CASES, ids=[f"{k}-{d}" for k, d in CASES])
def test_exported_model_computes_the_oracles_logits_and_state(framework_name, key, dtype,
                                                              tmp_path):  # fmt: skip
    target = _target(framework_name)
    directory, cfg, params = _checkpoint(key, tmp_path / "ckpt", dtype)
    if key == "gru_before" and target != "keras":
        with pytest.raises(ConfigError, match="export to keras"):
            _build(target, directory, state_input=False)
        return
    X, state = _inputs(cfg)
    tol = F64_TOL if dtype == "float64" else F32_TOL
    for given in (state, None):  # a carried state, and the default zero state
        model = _build(target, directory, state_input=given is not None)
        logits, final = RUN[target](model, X, given, dtype)
        want_logits, want_final = _oracle(params, cfg, X, given)
        assert logits.dtype == np.dtype(dtype)
        assert rel_err(logits, want_logits) <= tol
        assert len(final) == len(want_final)
        for got, want in zip(final, want_final, strict=True):
            assert rel_err(got, want) <= tol


def test_the_torch_module_is_plain_torch_layers(framework_name, tmp_path):
    if framework_name != "torch":
        pytest.skip("torch only")
    import torch

    from rnn_backends.export import to_torch

    directory, cfg, _ = _checkpoint("lstm_2l", tmp_path / "ckpt")
    module = to_torch(directory)
    assert isinstance(module.rnn, torch.nn.LSTM) and isinstance(module.head, torch.nn.Linear)
    assert module.rnn.batch_first and module.rnn.num_layers == 2
    assert module.vocab == TOKENS and not module.training
    assert all(not torch.any(v) for k, v in module.state_dict().items() if "bias_hh" in k)
    rnn = to_torch(_checkpoint("rnn", tmp_path / "rnn")[0]).rnn
    assert rnn.nonlinearity == "tanh"


def test_flax_variables_have_the_structure_init_gives(framework_name, tmp_path):
    if framework_name != "jax":
        pytest.skip("jax only")
    import jax

    from rnn_backends.export import to_flax

    for key in ("gru_2l_bi", "lstm"):
        directory, cfg, _ = _checkpoint(key, tmp_path / key)
        module, variables = to_flax(directory)
        X, _ = _inputs(cfg)
        fresh = jax.eval_shape(module.init, jax.random.PRNGKey(0), X)  # shapes, no values
        assert jax.tree.structure(fresh) == jax.tree.structure(variables)
        shapes = jax.tree.map(lambda a: a.shape, fresh)
        assert jax.tree.map(lambda a: a.shape, variables) == shapes


# --- files written by the command, read back in a fresh process ---------------------------------

# Each reader uses the framework's own API where it can, so the files are shown usable without
# this package (flax needs the module class, from rnn_backends.export).
RELOAD = {
    "torch": """
        import torch
        def load(path, *_):
            obj = torch.load(path, weights_only=True)
            c = obj["config"]
            kind = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[c["cell"]]
            extra = {"nonlinearity": "tanh"} if c["cell"] == "rnn" else {}
            dt = getattr(torch, c["dtype"])
            D = 2 if c["bidirectional"] else 1
            rnn = kind(c["vocab_size"], c["hidden_size"], num_layers=c["num_layers"],
                       bidirectional=c["bidirectional"], batch_first=True, dtype=dt, **extra)
            head = torch.nn.Linear(c["hidden_size"] * D, c["vocab_size"], dtype=dt)
            sd = obj["state_dict"]
            rnn.load_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("rnn.")})
            head.load_state_dict({k[5:]: v for k, v in sd.items() if k.startswith("head.")})
            def run(X):
                x = torch.nn.functional.one_hot(torch.as_tensor(X), c["vocab_size"]).to(dt)
                with torch.no_grad():
                    return head(rnn(x)[0]).numpy()
            return run
    """,
    "keras": """
        import keras
        def load(path, *_):
            model = keras.saving.load_model(path)
            return lambda X: np.asarray(model(X.astype(np.int32))["logits"])
    """,
    "flax": """
        import jax
        from rnn_backends.export import load_flax
        def load(path, *_):
            module, variables = load_flax(path)
            return lambda X: np.asarray(jax.jit(module.apply)(variables, X)[0])
    """,
    "gluon": """
        import warnings
        from mxnet import gluon, npx, np as mnp
        npx.set_np()
        def load(prefix, states, shape, dtype):
            inputs = [f"data{k}" for k in range(1 + states)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Gluon cannot infer the ids' dtype, and says so
                net = gluon.SymbolBlock.imports(prefix + "-symbol.json", inputs,
                                                prefix + "-0000.params")
            zeros = [mnp.zeros(shape, dtype=dtype) for _ in range(states)]
            return lambda X: net(mnp.array(X, dtype="int64"), *zeros)[0].asnumpy()
    """,
}
SUFFIX = {"torch": ".pt", "keras": ".keras", "flax": ".msgpack", "gluon": ""}


def test_exported_files_reload_in_a_fresh_process(framework_name, tmp_path):
    target = _target(framework_name)
    jobs, expected = [], {}
    for key, dtype in [("gru_2l_bi", "float64"), ("lstm_2l", "float64"), ("rnn", "float32")]:
        directory, cfg, params = _checkpoint(key, tmp_path / f"ckpt_{key}_{dtype}", dtype)
        out = tmp_path / f"{key}_{dtype}{SUFFIX[target]}"
        assert main(["export", "--checkpoint", str(directory), "--to", target,
                     "--out", str(out)]) == 0  # fmt: skip
        X, state = _inputs(cfg)
        jobs.append((str(out), X.tolist(), len(state), state[0].shape, dtype))
        expected[str(out)] = (_oracle(params, cfg, X, None)[0], dtype)
    script = "import json, sys\nimport numpy as np\n" + textwrap.dedent(RELOAD[target]) + (
        "\nresults = {}\n"
        "for path, X, states, shape, dtype in json.loads(sys.argv[1]):\n"
        "    results[path] = load(path, states, shape, dtype)(np.array(X)).tolist()\n"
        "print(json.dumps(results))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(jobs)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for path, (want, dtype) in expected.items():
        tol = F64_TOL if dtype == "float64" else F32_TOL
        assert rel_err(np.array(results[path]), want) <= tol, path


# --- safetensors and npz (no framework) --------------------------------------------------------


def _parse_safetensors(blob: bytes):
    """The format read straight from its description: u64 LE header length, JSON header, data."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    data = blob[8 + n :]
    meta = header.pop("__metadata__", {})
    arrays = {}
    kinds = {"F64": "<f8", "F32": "<f4"}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        arrays[name] = np.frombuffer(data[begin:end], kinds[entry["dtype"]]).reshape(
            entry["shape"]
        )
    return n, header, data, meta, arrays


@pytest.mark.parametrize("key,dtype", [("gru_before", "float64"), ("lstm_2l_bi", "float64"),
                                       ("gru_2l", "float32")])  # fmt: skip
def test_safetensors_holds_the_books_names_and_round_trips(key, dtype, tmp_path):
    directory, cfg, params = _checkpoint(key, tmp_path / "checkpoint", dtype)
    out = tmp_path / "model.safetensors"
    # The run directory: its checkpoint/ is found.
    assert main(["export", "--checkpoint", str(tmp_path), "--to", "safetensors",
                 "--out", str(out)]) == 0  # fmt: skip
    blob = out.read_bytes()
    n, header, data, meta, arrays = _parse_safetensors(blob)
    assert n % 8 == 0 and blob[8] == ord("{")  # the data starts 8-byte aligned
    spans = sorted(e["data_offsets"] for e in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # back to back
    assert set(arrays) == set(param_shapes(cfg))
    for k, v in params.items():
        assert arrays[k].dtype == v.dtype and np.array_equal(arrays[k], v), k
        assert header[k]["dtype"] == {"float64": "F64", "float32": "F32"}[dtype]
    assert ModelConfig.from_dict(json.loads(meta["model_config"])) == cfg
    assert json.loads(meta["vocab"]) == TOKENS
    # The package's own reader gives the same, and so the oracle's forward pass is the same.
    mine, mine_meta = read_safetensors(out)
    assert list(mine) == list(param_shapes(cfg)) and mine_meta == meta
    X, state = _inputs(cfg)
    want = _oracle(params, cfg, X, state)[0]
    assert np.array_equal(_oracle(mine, cfg, X, state)[0], want)


def test_npz_holds_the_books_names(tmp_path):
    directory, cfg, params = _checkpoint("lstm_2l", tmp_path / "ckpt")
    out = tmp_path / "w.npz"
    save(directory, "npz", out)
    with np.load(out, allow_pickle=False) as npz:
        assert set(npz.files) == set(param_shapes(cfg))
        for k, v in params.items():
            assert npz[k].dtype == v.dtype and np.array_equal(npz[k], v), k


def _valid_safetensors(tmp_path: Path) -> bytes:
    _checkpoint("rnn", tmp_path / "ckpt")
    save(tmp_path / "ckpt", "safetensors", tmp_path / "ok.safetensors")
    return (tmp_path / "ok.safetensors").read_bytes()


def _rewrite_header(blob: bytes, change) -> bytes:
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    change(header)
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + blob[8 + n :]


def _move(header, name, begin, end):
    """Move tensor ``name``'s offsets by ``begin`` and ``end`` bytes."""
    old = header[name]["data_offsets"]
    header[name]["data_offsets"] = [old[0] + begin, old[1] + end]


DAMAGES = {
    "short": (lambda b: b[:5], "shorter than"),
    "huge header": (lambda b: (2**63).to_bytes(8, "little") + b[8:], "exceeds the file"),
    "truncated": (lambda b: b[:-8], "cover"),
    "trailing": (lambda b: b + b"\0" * 8, "cover"),
    "not json": (lambda b: b[:8] + b"[" + b[9:], "not JSON"),
    "size": (lambda b: _rewrite_header(b, lambda h: _move(h, "b_q", 0, 8)), "offsets"),
    "gap": (lambda b: _rewrite_header(b, lambda h: _move(h, "b_q", 8, 8)), "starts at"),
    "overlap": (lambda b: _rewrite_header(b, lambda h: h["W_hh"].update(data_offsets=[0, 200])),
                "starts at"),
    "dtype": (lambda b: _rewrite_header(b, lambda h: h["W_xh"].update(dtype="BF16")), "dtype"),
    "shape": (lambda b: _rewrite_header(b, lambda h: h["W_xh"].update(shape=[7, -5])), "dtype"),
    "metadata": (lambda b: _rewrite_header(b, lambda h: h.update(__metadata__={"a": 1})),
                 "strings"),
    "duplicate": (lambda b: b[:8] + b[8:].replace(b'"b_h"', b'"b_q"', 1), "twice"),
}  # fmt: skip


@pytest.mark.parametrize("damage,needle", DAMAGES.values(), ids=DAMAGES)
def test_the_safetensors_reader_refuses_damaged_files(damage, needle, tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(damage(_valid_safetensors(tmp_path)))
    with pytest.raises(CheckpointError, match=needle):
        read_safetensors(path)


def test_safetensors_reads_with_the_safetensors_package(framework_name, tmp_path):
    if framework_name != "torch":
        pytest.skip("the safetensors package is installed in the torch session")
    pytest.importorskip("safetensors")
    import torch
    from safetensors import safe_open
    from safetensors.numpy import load_file
    from safetensors.torch import load_file as load_torch

    for key, dtype in (("lstm_2l_bi", "float64"), ("gru", "float32")):
        directory, cfg, params = _checkpoint(key, tmp_path / key, dtype)
        out = tmp_path / f"{key}.safetensors"
        save(directory, "safetensors", out)
        arrays, tensors = load_file(str(out)), load_torch(str(out))
        assert set(arrays) == set(tensors) == set(params)
        for k, v in params.items():
            assert arrays[k].dtype == v.dtype and np.array_equal(arrays[k], v), k
            assert tensors[k].dtype == getattr(torch, dtype)
            assert np.array_equal(tensors[k].numpy(), v), k
        with safe_open(str(out), framework="np") as fh:
            meta = fh.metadata()
        assert ModelConfig.from_dict(json.loads(meta["model_config"])) == cfg


# --- the command's errors -----------------------------------------------------------------------


def _export(capsys, *args: str) -> tuple[int, str]:
    try:
        status = main(["export", *args])
    except SystemExit as exc:  # argparse
        status = exc.code
    err = capsys.readouterr().err
    return status, err


def test_an_unknown_target_exits_2_with_the_choices(capsys, tmp_path):
    _checkpoint("rnn", tmp_path / "ckpt")
    status, err = _export(capsys, "--checkpoint", str(tmp_path / "ckpt"), "--to", "onnx",
                          "--out", str(tmp_path / "m"))  # fmt: skip
    assert status == 2 and "invalid choice: 'onnx'" in err and "safetensors" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(ConfigError, match="unknown export target 'onnx'"):
        save(tmp_path / "ckpt", "onnx", tmp_path / "m")


@pytest.mark.parametrize("target,modules,install", [
    ("torch", ("torch",), "pip install torch"),
    ("keras", ("tensorflow", "keras"), "pip install tensorflow"),
    ("flax", ("jax", "flax"), "pip install flax"),
    ("gluon", ("mxnet",), "pip install mxnet==1.9.1"),
])  # fmt: skip
def test_a_missing_framework_exits_2_with_the_install_that_works(target, modules, install,
                                                                 capsys, monkeypatch, tmp_path):
    for module in modules:  # None in sys.modules is what find_spec reports as not installed
        monkeypatch.setitem(sys.modules, module, None)
    module = modules[0]
    _checkpoint("lstm", tmp_path / "ckpt")
    out = tmp_path / ("m.keras" if target == "keras" else "m")
    status, err = _export(capsys, "--checkpoint", str(tmp_path / "ckpt"), "--to", target,
                          "--out", str(out))  # fmt: skip
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"export to {target} needs" in err and f"{module} is not installed" in err
    assert install in err and "pip install -e '.[" in err
    assert not list(tmp_path.glob("m*"))
    with pytest.raises(BackendUnavailableError):
        save(tmp_path / "ckpt", target, out)


@pytest.mark.parametrize("target", ["torch", "flax", "gluon"])
def test_a_reset_before_gru_is_refused_where_the_layer_cannot_hold_it(target, capsys, tmp_path):
    _checkpoint("gru_before", tmp_path / "ckpt")
    status, err = _export(capsys, "--checkpoint", str(tmp_path / "ckpt"), "--to", target,
                          "--out", str(tmp_path / "m"))  # fmt: skip
    assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "gru_reset_after=False" in err
    assert "export to keras" in err and "safetensors or npz" in err
    assert not list(tmp_path.glob("m*"))


def test_other_mistakes_exit_2_and_write_nothing(capsys, tmp_path):
    _checkpoint("rnn", tmp_path / "ckpt")
    ck = str(tmp_path / "ckpt")
    status, err = _export(capsys, "--checkpoint", ck, "--to", "keras", "--out",
                          str(tmp_path / "m.h5"))  # fmt: skip
    assert status == 2 and "ending in .keras" in err
    status, err = _export(capsys, "--checkpoint", str(tmp_path / "nowhere"), "--to", "npz",
                          "--out", str(tmp_path / "m.npz"))  # fmt: skip
    assert status == 2 and "no checkpoint.json" in err
    (tmp_path / "m.npz").write_bytes(b"mine")
    status, err = _export(capsys, "--checkpoint", ck, "--to", "npz", "--out",
                          str(tmp_path / "m.npz"))  # fmt: skip
    assert status == 2 and "--overwrite" in err
    assert (tmp_path / "m.npz").read_bytes() == b"mine"
    assert main(["export", "--checkpoint", ck, "--to", "npz", "--out", str(tmp_path / "m.npz"),
                 "--overwrite"]) == 0  # fmt: skip
    assert np.load(tmp_path / "m.npz")["W_xh"].shape == (V, H)


def test_bare_parameters_export_with_their_gru_convention(tmp_path):
    from rnn_backends.export import to_flax, to_gluon, to_torch

    _, cfg, params = _checkpoint("gru_before", tmp_path / "ckpt")
    with pytest.raises(ConfigError, match="export to keras"):
        save(params, "torch", tmp_path / "m.pt", gru_reset_after=False)
    for to in (to_torch, to_flax, to_gluon):  # refused before the framework is imported
        with pytest.raises(ConfigError, match="export to keras"):
            to(params, gru_reset_after=False)
    save(params, "npz", tmp_path / "m.npz", gru_reset_after=False)
    with pytest.raises(ConfigError, match="read from the checkpoint"):
        save(tmp_path / "ckpt", "npz", tmp_path / "n.npz", gru_reset_after=True)
    with np.load(tmp_path / "m.npz") as npz:
        assert all(np.array_equal(npz[k], v) for k, v in params.items())
    bad = {k: v.astype(np.float16) for k, v in params.items()}
    with pytest.raises(ConfigError, match="float32 or all float64"):
        save(bad, "npz", tmp_path / "o.npz")


def test_importing_export_and_building_the_cli_import_no_framework():
    code = (
        "import sys\n"
        "import rnn_backends.export\n"
        "from rnn_backends.cli import build_parser\n"
        "build_parser()\n"
        "heavy = {'torch', 'jax', 'flax', 'tensorflow', 'keras', 'mxnet', 'safetensors'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
