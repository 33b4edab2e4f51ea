"""Checkpoint safety: no code runs on load, every malformed file gets one clean error, round trips are exact."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lidvae_ext
from lidvae_ext import CheckpointError, TrainingDiverged, cli
from lidvae_ext.checkpoint import CHECKPOINT_FORMAT, check_plain, load_checkpoint, save_checkpoint
from lidvae_ext.core.options import ModelOptions
from lidvae_ext.families import build_from_spec, model_from_checkpoint, parse_spec
from lidvae_ext.runner.run import data_from_checkpoint
from lidvae_ext.training import TrainConfig, train

warnings.filterwarnings("ignore", message="lidvae_ext: no fused kernel")
LEGACY = Path(__file__).parent / "data" / "legacy_checkpoints"
DIM = 10


def data(n=64, d=DIM, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, generator=g) @ torch.rand(3, d, generator=g) / 3).clamp(0, 1)


def cfg(epochs, **kw):
    return TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, progress=False, **kw)


# Every model family the package builds, as (ModelSpec text, ModelOptions overrides). A new family
# (or likelihood) joins the round-trip tests by adding its spec here.
SMALL = dict(latent_dim=2, encoder_hidden=(8,), decoder_hidden=(8,), icnn_hidden=4)
MODEL_SPECS = [
    pytest.param("vae", dict(binarize=True), id="vae"),
    pytest.param("betavae0.5", {}, id="betavae"),
    pytest.param("vae", dict(likelihood="gaussian", learn_std=True), id="vae-gaussian-learned-std"),
    pytest.param("lidvae", dict(binarize=True), id="lidvae"),  # the default β: the training split's PCA
    pytest.param("lidvae-fixed", {}, id="lidvae-fixed-beta"),
    pytest.param("lidvae-random", {}, id="lidvae-random-beta"),
    pytest.param("lidvae-learned", {}, id="lidvae-learned-beta"),
    pytest.param("lidvae-alpha0", dict(likelihood="gaussian"), id="lidvae-alpha0-gaussian"),
    pytest.param("gmvae", dict(binarize=True, clusters=3), id="gmvae"),
    pytest.param("lidgmvae", dict(clusters=3), id="lidgmvae"),  # β pca, as the LIDVAE's default
    pytest.param("lidvae-learned-alpha0.5", dict(likelihood="gaussian", learn_std=True, icnn_layers=3),
                 id="lidvae-learned-beta-gaussian-learned-std"),
]


def make_model(spec: str, overrides: dict):
    torch.manual_seed(0)
    return build_from_spec(parse_spec(spec), DIM, ModelOptions(**{**SMALL, **overrides}), train_x=data())


def outputs(model, x):
    model.eval()
    z = torch.randn(5, model.latent_dim, generator=torch.Generator().manual_seed(3))
    mean, logvar = model.encode(x)
    return {"mean": mean, "logvar": logvar, "decoded": model.decode(z), "log_lik": model.log_likelihood(x, mean)}


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("spec, overrides", MODEL_SPECS)
def test_round_trip_every_model_family(tmp_path, spec, overrides):
    model = make_model(spec, overrides)
    train(model, data(), cfg(2), tmp_path, extra_state={"spec": spec})
    path = tmp_path / "checkpoint.pt"
    raw = torch.load(path, weights_only=True)  # loads under PyTorch's restricted unpickler as it stands
    check_plain(raw)  # tensors and plain values only (configs are dicts, not dataclasses)
    state = load_checkpoint(tmp_path)
    assert state["model_config"] == model.config and state["epoch"] == 2 and state["spec"] == spec
    for rebuilt in (model_from_checkpoint(state, source=path), model_from_checkpoint(path)):
        assert type(rebuilt) is type(model) and rebuilt.config == model.config
        assert list(rebuilt.state_dict()) == list(model.state_dict())
        for name, value in model.state_dict().items():
            torch.testing.assert_close(rebuilt.state_dict()[name], value, rtol=0, atol=0, msg=name)
        x = data(7, seed=2)
        for key, value in outputs(model, x).items():
            torch.testing.assert_close(outputs(rebuilt, x)[key], value, rtol=0, atol=0, msg=key)
    # the optimizer state round-trips too: 1 + 1 resumed epochs == 2 uninterrupted ones
    part = make_model(spec, overrides)
    train(part, data(), cfg(1), tmp_path / "part")
    resumed = make_model(spec, overrides)
    assert train(resumed, data(), cfg(2), tmp_path / "part", resume=True).resumed_from == 1
    model.train()
    torch.testing.assert_close(resumed.state_dict(), model.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("spec", ["vae", "lidvae-learned"])
def test_checkpoints_of_the_previous_version_still_load(spec):
    # written by lidvae_ext 0.1.0 before checkpoints were read with weights_only=True (make_legacy.py)
    path = LEGACY / f"{spec}.pt"
    state = load_checkpoint(path)
    assert state["format"] == CHECKPOINT_FORMAT and state["epoch"] == 2 and state["spec"] == spec
    model = model_from_checkpoint(state, source=path).eval()
    expected = torch.load(LEGACY / f"{spec}.outputs.pt", weights_only=True)
    torch.testing.assert_close(model.decode(expected["z"]), expected["decoded"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(model.encode(data()[:4])[0], expected["mean"], rtol=1e-6, atol=1e-6)
    assert data_from_checkpoint(path, state).name == "legacy.npy"


def test_save_refuses_non_plain_values(tmp_path):
    state = {"format": CHECKPOINT_FORMAT, "options": ModelOptions()}
    with pytest.raises(TypeError, match=r"checkpoint\['options'\] is a lidvae_ext.core.options.ModelOptions"):
        save_checkpoint(tmp_path / "c.pt", state)
    with pytest.raises(TypeError, match=r"checkpoint\['out'\]\[0\] is a pathlib"):
        check_plain({"out": [Path("x")]}, "checkpoint")
    with pytest.raises(TypeError, match=r"checkpoint\['seconds'\] is a numpy.float64"):
        save_checkpoint(tmp_path / "c.pt", {"seconds": np.float64(1.0)})
    assert not list(tmp_path.iterdir())  # refused before anything was written
    save_checkpoint(tmp_path / "c.pt", {"format": CHECKPOINT_FORMAT, "options": dataclasses.asdict(ModelOptions())})


# ----------------------------------------------------------------------------- malicious files
class Payload:
    """Unpickling this object runs code that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


def _evil_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    good = {"format": CHECKPOINT_FORMAT, "model_config": {"model": "vae"}, "model_state": {}}
    files = {
        "top-level": lambda p: torch.save(Payload(marker), p),
        "nested-in-valid-layout": lambda p: torch.save({**good, "model_state": {"w": Payload(marker)}}, p),
        "legacy-torch-format": lambda p: torch.save({"x": Payload(marker)}, p, _use_new_zipfile_serialization=False),
        "raw-pickle": lambda p: p.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "x": Payload(marker)},
                                                           protocol=2)),
        # protocol 5: torch's restricted unpickler stops at the first (FRAME) opcode, before the payload
        "raw-pickle-protocol-5": lambda p: p.write_bytes(pickle.dumps(Payload(marker), protocol=5)),
    }
    out = {}
    for name, write in files.items():
        out[name] = tmp_path / f"{name}.pt"
        write(out[name])
    return out


def test_malicious_checkpoint_payload_never_runs(tmp_path, capsys):
    marker = tmp_path / "marker"
    files = _evil_files(tmp_path, marker)
    # control: the payload is real, an unrestricted unpickle of the file does run it
    torch.load(files["top-level"], weights_only=False)
    assert marker.read_text() == "payload ran"
    marker.unlink()
    for name, path in files.items():
        expected = ("not a readable checkpoint (truncated or not a torch.save file): UnpicklingError: "
                    "Unsupported operand 149" if name.endswith("protocol-5") else
                    "refused to load: it contains a pickled Python object (exec) that could run code when "
                    "unpickled; nothing in it was executed")
        for load in (load_checkpoint, model_from_checkpoint):
            with pytest.raises(CheckpointError) as info:
                load(path)
            assert info.value.path == path and str(info.value).startswith(f"{path}: {expected}"), name
            assert "\n" not in str(info.value)
        assert cli.main(["evaluate", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"lidvae-ext evaluate: error: {path}: {expected}")
        assert not marker.exists(), name


def test_malicious_checkpoint_through_the_console_script(tmp_path):
    marker = tmp_path / "marker"
    path = _evil_files(tmp_path, marker)["nested-in-valid-layout"]
    # run outside the source tree, with the lidvae_ext under test (installed, or an in-place build)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(lidvae_ext.__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "lidvae_ext.cli", "evaluate", str(path)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path, env=env)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [res.stderr.strip()] and "Traceback" not in res.stderr
    assert f"{path}: refused to load" in res.stderr
    assert not marker.exists()


# ----------------------------------------------------------------------------- malformed files
@pytest.fixture(scope="module")
def good_state(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    model = make_model("vae", {})
    extra = {"data": {"name": "digits", "data_dir": None, "train_size": 40, "test_size": 20, "seed": 0},
             "spec": "vae"}
    train(model, data(), cfg(1), out, extra_state=extra)
    return load_checkpoint(out)


def _with(**changes):
    def mutate(state):
        for dotted, value in changes.items():
            *parents, leaf = dotted.split("__")
            target = state
            for key in parents:
                target = target[key]
            if value is DELETE:
                del target[leaf]
            else:
                target[leaf] = value
        return state
    return mutate


DELETE = object()


def _write_bytes(data_: bytes):
    return lambda path, state: path.write_bytes(data_)


def _truncated(path, state):
    torch.save(state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _saved(obj):
    return lambda path, state: torch.save(obj, path)


def _mutated(mutate):
    return lambda path, state: torch.save(mutate(copy.deepcopy(state)), path)


def _shape_mismatch(state):
    state["model_config"]["latent_dim"] = 4  # weights are for K = 2
    return state


def _nan_weight(state):
    state["model_state"]["decoder.0.weight"][0, 0] = float("nan")
    return state


def _inf_weight(sign):
    def mutate(state):
        state["model_state"]["decoder.0.bias"][1] = sign * float("inf")
        return state

    return mutate


def _rename_weight(state):
    state["model_state"]["decoder.0.weight_renamed"] = state["model_state"].pop("decoder.0.weight")
    return state


def _self_containing(state):
    loop: list = [{"epoch": 1}]
    loop.append(loop)
    state["history"] = loop
    return state


def _nested(depth):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _optimizer_without_groups(state):
    del state["optimizer_state"]["param_groups"]
    return state


# (id, how to write the file from a valid state, API to call, expected message fragment)
MALFORMED = [
    ("garbage-bytes", _write_bytes(bytes(random.Random(0).randrange(256) for _ in range(256))), load_checkpoint,
     "not a readable checkpoint"),
    ("zero-bytes", _write_bytes(bytes(100)), load_checkpoint, "not a readable checkpoint"),
    ("empty-file", _write_bytes(b""), load_checkpoint, "not a readable checkpoint"),
    ("text-file", _write_bytes(b"hello, I am not a checkpoint\n"), load_checkpoint, "not a readable checkpoint"),
    ("truncated", _truncated, load_checkpoint, "not a readable checkpoint"),
    ("not-a-dict", _saved([torch.zeros(2)]), load_checkpoint, "not a lidvae_ext checkpoint (it holds a list"),
    ("plain-state-dict", _saved({"weight": torch.zeros(2)}), load_checkpoint, "no 'format' entry"),
    ("foreign-format", _mutated(_with(format="someone.else/3")), load_checkpoint,
     "not a lidvae_ext checkpoint (format 'someone.else/3'"),
    ("newer-format", _mutated(_with(format="lidvae_ext.checkpoint/99")), load_checkpoint,
     "unsupported checkpoint format 'lidvae_ext.checkpoint/99'"),
    ("missing-model-config", _mutated(_with(model_config=DELETE)), load_checkpoint, "missing 'model_config'"),
    ("missing-weights-and-epoch", _mutated(_with(model_state=DELETE, epoch=DELETE)), load_checkpoint,
     "missing 'model_state', 'epoch'"),
    ("epoch-mistyped", _mutated(_with(epoch="3")), load_checkpoint, "'epoch' should be an integer >= 0, got '3'"),
    ("epoch-negative", _mutated(_with(epoch=-1)), load_checkpoint, "'epoch' should be an integer >= 0"),
    ("seconds-nan", _mutated(_with(seconds=float("nan"))), load_checkpoint, "'seconds' should be a finite number"),
    ("history-mistyped", _mutated(_with(history={"epoch": 1})), load_checkpoint, "'history' should be a list"),
    ("weights-not-a-dict", _mutated(_with(model_state=[1, 2])), load_checkpoint,
     "'model_state' should be a dict of tensors, got a list"),
    ("weight-not-a-tensor", _mutated(_with(**{"model_state__decoder.0.weight": [[0.0]]})), load_checkpoint,
     "'model_state' should map names to tensors"),
    ("optimizer-without-groups", _mutated(_optimizer_without_groups), load_checkpoint,
     "'optimizer_state' should hold a dict 'state' and a list 'param_groups'"),
    ("data-mistyped", _mutated(_with(data="digits")), load_checkpoint, "'data' should be a dict"),
    ("self-containing-list", _mutated(_self_containing), load_checkpoint, "checkpoint['history'][1] contains itself"),
    ("nested-too-deep", _mutated(_with(spec=_nested(40))), load_checkpoint, "nested more than 32 levels deep"),
    ("numpy-scalar-pickled", _mutated(_with(seconds=np.float64(1.5))), load_checkpoint,
     "refused to load: it contains a pickled Python object (numpy."),
    ("config-without-kind", _mutated(_with(model_config__model=DELETE)), load_checkpoint,
     "'model_config' has no model kind"),
    ("config-holds-tensor", _mutated(_with(model_config__latent_dim=torch.tensor(2))), load_checkpoint,
     "checkpoint['model_config']['latent_dim'] is a tensor (expected a plain value)"),
    ("non-plain-allowed-type", _mutated(_with(model_config__dtype=torch.float32)), load_checkpoint,
     "checkpoint['model_config']['dtype'] is a torch.dtype"),
    ("unknown-model-kind", _mutated(_with(model_config__model="gan")), model_from_checkpoint,
     "model config cannot be built by this version of lidvae_ext (ValueError: unknown model kind 'gan'"),
    ("unknown-config-key", _mutated(_with(model_config__flux_capacitor=1)), model_from_checkpoint,
     "model config cannot be built by this version of lidvae_ext (TypeError:"),
    ("config-value-mistyped", _mutated(_with(model_config__latent_dim="2")), model_from_checkpoint,
     "model config cannot be built"),
    ("unknown-likelihood", _mutated(_with(model_config__likelihood={"kind": "poisson"})), model_from_checkpoint,
     "unknown likelihood kind 'poisson'"),
    ("custom-encoder", _mutated(_with(model_config__custom_encoder=True)), model_from_checkpoint,
     "created with a custom encoder"),
    ("weights-shape-mismatch", _mutated(_shape_mismatch), model_from_checkpoint,
     "weights do not match its model config: encoder.net.2.weight has shape (4, 8), the config needs (8, 8); "
     "encoder.net.2.bias has shape (4), the config needs (8); decoder.0.weight"),
    ("weight-renamed", _mutated(_rename_weight), model_from_checkpoint,
     "weights do not match its model config: missing decoder.0.weight; unexpected decoder.0.weight_renamed"),
    ("weight-nan", _mutated(_nan_weight), model_from_checkpoint, "weights hold non-finite values (decoder.0.weight)"),
    ("weight-inf", _mutated(_inf_weight(1)), model_from_checkpoint, "weights hold non-finite values (decoder.0.bias)"),
    ("weight-neginf", _mutated(_inf_weight(-1)), model_from_checkpoint,
     "weights hold non-finite values (decoder.0.bias)"),
    ("data-entry-mistyped", _mutated(_with(data__train_size="40")), data_from_checkpoint,
     "'data' entry 'train_size' is '40' (str)"),
    ("data-entry-unknown", _mutated(_with(data__colour="red")), data_from_checkpoint,
     "'data' has an unknown entry 'colour'"),
]


@pytest.mark.parametrize("write, api, message", [pytest.param(*case[1:], id=case[0]) for case in MALFORMED])
def test_malformed_checkpoint_gives_one_clean_error(tmp_path, capsys, good_state, write, api, message):
    path = tmp_path / "checkpoint.pt"
    write(path, good_state)
    apis = {load_checkpoint: [load_checkpoint, model_from_checkpoint],
            model_from_checkpoint: [model_from_checkpoint], data_from_checkpoint: [data_from_checkpoint]}[api]
    for call in apis:
        with pytest.raises(CheckpointError) as info:
            call(path)
        assert isinstance(info.value, ValueError) and info.value.path == path
        assert str(info.value).startswith(f"{path}: ") and message in str(info.value)
        assert "\n" not in str(info.value) and len(str(info.value)) < 400
    for target in (path, tmp_path):  # the file, or the directory holding checkpoint.pt
        assert cli.main(["evaluate", str(target)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.splitlines() == [f"lidvae-ext evaluate: error: {info.value}"]


def test_model_from_state_dict_names_the_source(good_state):
    bad = _shape_mismatch(copy.deepcopy(good_state))
    with pytest.raises(CheckpointError, match=r"^checkpoint: its weights do not match"):
        model_from_checkpoint(bad)
    with pytest.raises(CheckpointError, match=r"^elsewhere.pt: its weights do not match"):
        model_from_checkpoint(bad, source="elsewhere.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        model_from_checkpoint(Path("does/not/exist.pt"))


# ----------------------------------------------------------------------------- resume
def test_resume_with_other_settings_names_them(tmp_path):
    extra = {"data": {"name": "digits", "data_dir": None, "train_size": 40, "test_size": 20, "seed": 0}}
    train(make_model("vae", {}), data(), cfg(1), tmp_path, extra_state=extra)
    with pytest.raises(CheckpointError) as info:
        other = {"data": {**extra["data"], "train_size": 50, "data_dir": "/elsewhere"}}
        train(make_model("vae", dict(latent_dim=3)), data(), TrainConfig(epochs=2, batch_size=16, lr=3e-3,
                                                                          progress=False), tmp_path,
              resume=True, extra_state=other)
    text = str(info.value)
    assert text.startswith(f"{tmp_path / 'checkpoint.pt'}: cannot resume")
    assert "latent_dim: checkpoint 2, this run 3" in text and "batch_size: checkpoint 32, this run 16" in text
    assert "data.train_size: checkpoint 40, this run 50" in text and "data_dir" not in text
    assert "epochs" not in text  # more epochs is what resuming is for
    # the refused resume left the checkpoint alone
    assert load_checkpoint(tmp_path)["epoch"] == 1


def test_resume_rejects_optimizer_state_that_does_not_fit(tmp_path):
    train(make_model("vae", {}), data(), cfg(1), tmp_path)
    state = load_checkpoint(tmp_path)
    state["optimizer_state"]["state"][0]["exp_avg"] = torch.zeros(3)
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match=r"optimizer state 'exp_avg' of parameter 0 has shape \(3\), "
                                              r"the parameter \(8, 10\)"):
        train(make_model("vae", {}), data(), cfg(2), tmp_path, resume=True)
    state["optimizer_state"]["state"][0]["exp_avg"] = torch.zeros(8, 10)
    state["optimizer_state"]["param_groups"][0]["lr"] = "fast"
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="optimizer param group 0 has lr='fast', expected a float"):
        train(make_model("vae", {}), data(), cfg(2), tmp_path, resume=True)
    state["optimizer_state"]["param_groups"][0]["lr"] = 3e-3
    state["optimizer_state"]["param_groups"][0]["params"] = [0, 1]
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    model = make_model("vae", {})
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError, match="optimizer state does not fit this model's optimizer: ValueError"):
        train(model, data(), cfg(2), tmp_path, resume=True)
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)  # left as it was


TINY_CLI = ["--train-size", "40", "--test-size", "20", "--encoder-hidden", "8", "--decoder-hidden", "8",
            "--latent-dim", "2", "--no-progress", "--threads", "1", "--no-eval", "--batch-size", "20"]


def test_cli_resume_with_other_settings_and_into_a_bad_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "vae", "--epochs", "1", "--out", str(out), *TINY_CLI]) == 0
    capsys.readouterr()
    rc = cli.main(["train", "--model", "vae", "--epochs", "2", "--resume", "--out", str(out), "--lr", "0.01",
                   *TINY_CLI[:1], "30", *TINY_CLI[2:]])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and "Traceback" not in "".join(err)
    assert err[-1].startswith(f"lidvae-ext train: error: {out / 'checkpoint.pt'}: cannot resume")
    assert "lr: checkpoint 0.001, this run 0.01" in err[-1] and "data.train_size: checkpoint 40, this run 30" in err[-1]
    (out / "checkpoint.pt").write_bytes(b"\x00" * 100)
    assert cli.main(["train", "--model", "vae", "--epochs", "2", "--resume", "--out", str(out), *TINY_CLI]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(
        f"lidvae-ext train: error: {out / 'checkpoint.pt'}: not a readable checkpoint")


# ----------------------------------------------------------------------------- divergence
def _poison_after(step: int, monkeypatch):
    """Make the ``step``-th Adam step (1-based, counted over the test) write NaN into the weights."""
    real_step, count = torch.optim.Adam.step, [0]

    def step_then_poison(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        count[0] += 1
        if count[0] == step:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", step_then_poison)


@pytest.mark.parametrize("spec", ["vae", "lidvae"])
@pytest.mark.parametrize("poison_step, every, diverged, kept, what", [
    # (3 batches per epoch) the first step of epoch 3 makes the weights NaN: the VAE's epoch-3 loss is NaN,
    # the fused LIDVAE kernels refuse the NaN ICNN weights in the next forward
    (7, 1, 3, 2, "non-finite "),
    (6, 1, 2, 1, "non-finite weights, loss "),  # last step of epoch 2: its loss is finite, its weights NaN
    (10, 2, 4, 2, "non-finite "),  # checkpoints every 2 epochs: the last good one is epoch 2's
])
def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, spec, poison_step, every, diverged, kept,
                                                   what):
    snapshots = {}
    model = make_model(spec, {})

    def remember(record):
        snapshots[record["epoch"]] = copy.deepcopy(model.state_dict())

    _poison_after(poison_step, monkeypatch)
    with pytest.raises(TrainingDiverged) as info:
        train(model, data(96), cfg(6, checkpoint_every=every), tmp_path, on_epoch=remember)
    exc = info.value
    assert isinstance(exc, FloatingPointError)
    assert (exc.epoch, exc.checkpoint_epoch, exc.checkpoint) == (diverged, kept, tmp_path / "checkpoint.pt")
    assert str(exc).startswith(f"training diverged at epoch {diverged} ({what}")
    assert str(exc).endswith(f"; the last good checkpoint (epoch {kept}) is kept at {tmp_path / 'checkpoint.pt'}")
    state = load_checkpoint(tmp_path)
    assert state["epoch"] == kept and len(state["history"]) == kept
    torch.testing.assert_close(state["model_state"], snapshots[kept], rtol=0, atol=0)
    model_from_checkpoint(state)  # finite, loadable
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_divergence_before_any_checkpoint(tmp_path, monkeypatch):
    _poison_after(1, monkeypatch)
    with pytest.raises(TrainingDiverged, match=r"^training diverged at epoch 1 .*; no checkpoint of this run"):
        train(make_model("vae", {}), data(), cfg(3), tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_cli_divergence_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _poison_after(3, monkeypatch)  # 2 batches per epoch: epoch 1 is good, epoch 2 diverges
    rc = cli.main(["train", "--model", "lidvae", "--epochs", "4", "--out", str(out), *TINY_CLI])
    err = capsys.readouterr().err.splitlines()
    assert rc == 1 and "Traceback" not in "".join(err)
    assert err[-1].startswith("lidvae-ext train: error: training diverged at epoch 2 (non-finite ")
    assert err[-1].endswith(f"; the last good checkpoint (epoch 1) is kept at {out / 'checkpoint.pt'}")
    assert load_checkpoint(out)["epoch"] == 1
