"""The ``lidvae-ext`` command line on tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch

from lidvae_ext import cli
from lidvae_ext.ops import fused_available
from lidvae_ext.report import REQUIRED_KEYS
from lidvae_ext.checkpoint import load_checkpoint

warnings.filterwarnings("ignore", message="lidvae_ext: no fused kernel")
TINY = ["--train-size", "150", "--test-size", "60", "--encoder-hidden", "32", "--decoder-hidden", "32",
        "--icnn-hidden", "16", "--latent-dim", "4", "--iwae-samples", "5", "--no-progress", "--threads", "1"]


def test_train_evaluate_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "lidvae", "--epochs", "1", "--out", str(out), *TINY]) == 0
    assert "active units" in capsys.readouterr().out
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 1 and state["data"]["train_size"] == 150 and state["spec"] == "lidvae"
    assert json.loads((out / "metrics.json").read_text())["latent_dim"] == 4
    assert cli.main(["train", "--model", "lidvae", "--epochs", "2", "--resume", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]

    assert cli.main(["evaluate", str(out / "checkpoint.pt"), "--iwae-samples", "7"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in REQUIRED_KEYS:
        assert key in metrics
    assert metrics["epochs"] == 2 and metrics["iwae_samples"] == 7 and metrics["num_examples"] == 60
    assert 0 <= metrics["active_units"] <= 4 and len(metrics["kl_per_dim"]) == 4


def test_fused_lidvae_resume_is_exact(tmp_path, capsys):
    """1 epoch, then --resume to 2, through the CLI with the fused kernels: bit-for-bit the
    uninterrupted 2-epoch run (weights, Adam state, loss history)."""
    if not fused_available("cpu"):
        if os.environ.get("LIDVAE_EXT_REQUIRE_C", "0") == "1":
            pytest.fail("LIDVAE_EXT_REQUIRE_C=1 but the fused CPU kernels are not available")
        pytest.skip("lidvae_ext._C not built")
    args = ["train", "--model", "lidvae", "--backend", "fused", "--binarize", *TINY]
    assert cli.main([*args, "--epochs", "2", "--out", str(tmp_path / "full")]) == 0
    assert cli.main([*args, "--epochs", "1", "--out", str(tmp_path / "part")]) == 0
    assert cli.main([*args, "--epochs", "2", "--resume", "--out", str(tmp_path / "part")]) == 0
    capsys.readouterr()
    full, part = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("full", "part"))
    assert full["model_config"]["backend"] == "fused" and part["epoch"] == full["epoch"] == 2
    assert full["model_state"].keys() == part["model_state"].keys()
    for name, want in full["model_state"].items():
        torch.testing.assert_close(part["model_state"][name], want, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(part["optimizer_state"], full["optimizer_state"], rtol=0, atol=0)
    drop = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop(part["history"]) == drop(full["history"])


def test_compare_writes_report_and_figures(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = cli.main(["compare", "--epochs", "1", "--out", str(out), "--models", "vae,lidvae,betavae0.5", *TINY])
    assert rc == 0
    table = capsys.readouterr().out
    assert "| vae |" in table and "| lidvae |" in table and "| betavae0.5 |" in table
    report = json.loads((out / "report.json").read_text())
    assert list(report) == ["vae", "lidvae", "betavae0.5"]
    for m in report.values():
        assert set(REQUIRED_KEYS) <= set(m)
        assert m["latent_dim"] == 4 and len(m["kl_per_dim"]) == 4 and m["seconds"] > 0
        assert m["iwae_nll"] > 0 and m["kl"] >= 0
    assert report["betavae0.5"]["kl_weight"] == 0.5
    assert "| model |" in (out / "report.md").read_text()
    for fig in ("kl_per_dim.png", "reconstructions.png", "samples.png", "training_curves.png"):
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_and_missing_data(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train"])  # --out is required
    assert cli.main(["compare", "--models", "vae,gan", "--out", str(tmp_path)]) == 2
    assert "unknown model" in capsys.readouterr().err
    rc = cli.main(["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x")])
    assert rc == 2 and "dataset-fashion-mnist" in capsys.readouterr().err
    assert cli.main(["evaluate", str(tmp_path / "missing.pt")]) == 2


def test_keyboard_interrupt_exit_code(tmp_path, monkeypatch, capsys):
    from lidvae_ext import runner

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_train", boom)
    assert cli.main(["train", "--out", str(tmp_path), "--no-progress"]) == 130
    assert f"interrupted before the first checkpoint was written; nothing was saved under {tmp_path}" in \
        capsys.readouterr().err


def test_bench_passthrough(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "find_bench_script", lambda: None)
    assert cli.main(["bench"]) == 2
    assert "benchmarks/run.py" in capsys.readouterr().err
    script = tmp_path / "run.py"
    script.write_text("import sys\nprint('ARGS', sys.argv[1:])\nsys.exit(3 if '--fail' in sys.argv else 0)\n")
    monkeypatch.setattr(cli, "find_bench_script", lambda: script)
    assert cli.main(["bench", "--quick", "-n", "2"]) == 0
    assert "ARGS ['--quick', '-n', '2']" in capsys.readouterr().out
    assert cli.main(["bench", "--fail"]) == 3


def test_module_entry_point_help(tmp_path):
    # Run outside the repository: `python -m` puts the working directory first on sys.path,
    # and the uncompiled source tree must not shadow the installed package.
    res = subprocess.run([sys.executable, "-m", "lidvae_ext.cli", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert res.returncode == 0
    for cmd in ("train", "evaluate", "compare", "bench"):
        assert cmd in res.stdout


# ----------------------------------------------------------------------------- never destroy a run; one-line errors
TEXT_TINY = ["--data", "synthetic-text", "--train-size", "48", "--val-size", "8", "--test-size", "8", "--vocab-size",
             "80", "--latent-dim", "3", "--embed-dim", "4", "--hidden", "8", "--icnn-hidden", "6", "--epochs", "1",
             "--batch-size", "16", "--iwae-samples", "2", "--no-progress", "--threads", "1", "--no-figures"]


def _error_line(err: str, command: str = "train") -> str:
    """The CLI's one error line: no traceback, exactly one line starting with ``lidvae-ext <command>: error:``."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"lidvae-ext {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_train_refuses_to_overwrite_a_finished_run(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "vae", "--out", str(out), *TINY]
    assert cli.main([*args, "--epochs", "1"]) == 0
    ckpt = out / "checkpoint.pt"
    before, metrics = ckpt.read_bytes(), (out / "metrics.json").read_bytes()
    capsys.readouterr()
    assert cli.main([*args, "--epochs", "2"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(ckpt) in line and "--resume" in line and "--overwrite" in line
    assert cli.main([*args, "--epochs", "2", "--resume", "--overwrite"]) == 2
    assert "--resume and --overwrite exclude each other" in _error_line(capsys.readouterr().err)
    assert ckpt.read_bytes() == before and (out / "metrics.json").read_bytes() == metrics
    assert cli.main([*args, "--epochs", "2", "--overwrite"]) == 0  # asked for: a new 2-epoch run replaces it
    assert ckpt.read_bytes() != before
    state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]


def test_compare_refuses_to_overwrite_finished_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--models", "vae,lidvae", "--epochs", "1", "--out", str(out), "--no-figures", *TINY]
    assert cli.main(args) == 0
    before = {m: (out / m / "checkpoint.pt").read_bytes() for m in ("vae", "lidvae")}
    capsys.readouterr()
    # a new model beside finished ones: still refused before anything is trained
    assert cli.main([*args[:2], "betavae0.5,lidvae", *args[3:]]) == 2
    line = _error_line(capsys.readouterr().err, "compare")
    assert str(out / "lidvae" / "checkpoint.pt") in line and "--resume" in line and "--overwrite" in line
    assert not (out / "betavae0.5").exists()
    assert {m: (out / m / "checkpoint.pt").read_bytes() for m in ("vae", "lidvae")} == before

    text = tmp_path / "text"
    targs = ["compare", *TEXT_TINY, "--models", "svae", "--out", str(text)]
    assert cli.main(targs) == 0
    tbefore = (text / "svae" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert cli.main(targs) == 2
    line = _error_line(capsys.readouterr().err, "compare")
    assert str(text / "svae" / "checkpoint.pt") in line and "--resume" in line and "--overwrite" in line
    assert (text / "svae" / "checkpoint.pt").read_bytes() == tbefore
    assert cli.main([*targs, "--overwrite", "--epochs", "2"]) == 0
    assert load_checkpoint(text / "svae")["epoch"] == 2


def test_own_checkpoints_of_every_family_evaluate(tmp_path, capsys):
    """Checkpoints written by train (vae, lidvae, gmvae, lidgmvae) and by the text compare (svae, lidsvae)
    all evaluate through the CLI."""
    for model in ("vae", "lidvae", "gmvae", "lidgmvae"):
        assert cli.main(["train", "--model", model, "--epochs", "1", "--clusters", "2", "--no-eval",
                         "--out", str(tmp_path / model), *TINY]) == 0
    assert cli.main(["compare", *TEXT_TINY, "--models", "svae,lidsvae", "--out", str(tmp_path / "text")]) == 0
    capsys.readouterr()
    runs = {m: tmp_path / m / "checkpoint.pt" for m in ("vae", "lidvae", "gmvae", "lidgmvae")}
    runs.update({m: tmp_path / "text" / m / "checkpoint.pt" for m in ("svae", "lidsvae")})
    for model, path in runs.items():
        assert load_checkpoint(path)["model_config"]["model"] == model
        assert cli.main(["evaluate", str(path), "--iwae-samples", "3"]) == 0, capsys.readouterr().err
        m = json.loads(capsys.readouterr().out)
        assert m["model"] == model and m["epochs"] == 1 and m["iwae_samples"] == 3 and m["iwae_nll"] > 0
        assert m["num_examples"] == (8 if model in ("svae", "lidsvae") else 60)
    assert "ppl" in m and m["data"] == "synthetic-text"
    assert cli.main(["evaluate", str(runs["svae"]), "--iwae-samples", "2", "--test-size", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["num_examples"] == 5
    assert cli.main(["evaluate", str(runs["svae"]), "--data", "digits"]) == 2
    assert "--data must be text data" in _error_line(capsys.readouterr().err, "evaluate")


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "lidvae", "--latent-dim", "-3"], "--latent-dim must be a positive integer, got -3"),
    (["train", "--model", "vae", "--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["train", "--model", "vae", "--epochs", "-1"], "--epochs must be >= 0 and finite, got -1"),
    (["train", "--model", "vae", "--lr", "0"], "--lr must be > 0 and finite, got 0.0"),
    (["train", "--model", "lidvae", "--icnn-hidden", "0"], "--icnn-hidden must be a positive integer, got 0"),
    (["train", "--model", "vae", "--threads", "0"], "--threads must be a positive integer, got 0"),
    (["compare", "--models", "vae", "--train-size", "0"], "--train-size must be a positive integer, got 0"),
    (["compare", "--data", "synthetic-text", "--latent-dim", "0"], "--latent-dim must be a positive integer, got 0"),
    (["compare", "--data", "synthetic-text", "--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
])
def test_sizes_are_checked_up_front(tmp_path, capsys, argv, message):
    out = tmp_path / "out" / "run"
    assert cli.main([*argv, "--out", str(out)]) == 2
    assert message in _error_line(capsys.readouterr().err, argv[0])
    assert not (tmp_path / "out").exists()  # nothing created


def test_evaluate_checks_sizes(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "missing.pt"), "--iwae-samples", "0"]) == 2
    assert "--iwae-samples must be a positive integer, got 0" in _error_line(capsys.readouterr().err, "evaluate")


def test_unreadable_data_files_are_named(tmp_path, capsys):
    import numpy as np

    cases = {"x.npz": "not a NumPy .npz archive (no zip header)", "x.npy": "not a NumPy .npy array"}
    for name, message in cases.items():
        (tmp_path / name).write_text("just some text\n")
        assert cli.main(["train", "--model", "vae", "--data", str(tmp_path / name), "--out",
                         str(tmp_path / "run"), *TINY]) == 2
        line = _error_line(capsys.readouterr().err)
        assert f"{tmp_path / name}: {message}" in line and "pickled" not in line
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    assert cli.main(["train", "--model", "vae", "--data", str(tmp_path / "obj.npz"), "--out", str(tmp_path / "run"),
                     *TINY]) == 2
    assert f"{tmp_path / 'obj.npz'}: it holds an object array" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()  # the failed runs left no empty --out behind


TINY_TEXT = ["--train-size", "96", "--val-size", "32", "--test-size", "32", "--latent-dim", "4", "--embed-dim", "8",
             "--hidden", "16", "--icnn-hidden", "8", "--iwae-samples", "3", "--epochs", "1", "--no-progress",
             "--threads", "1"]


def test_train_and_evaluate_serve_sentence_models(tmp_path, capsys):
    """train/evaluate take the same path for every family: a sentence VAE trains without --data (its
    family's default data) and evaluates to the metrics train reported."""
    out = tmp_path / "lidsvae"
    assert cli.main(["train", "--model", "lidsvae-fixed", "--out", str(out), *TINY_TEXT]) == 0
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["data"] == "synthetic-text" and trained["latent_dim"] == 4 and "ppl" in trained
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--iwae-samples", "3"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key in ("active_units", "kl", "mutual_info", "neg_elbo", "iwae_nll", "ppl"):
        assert evaluated[key] == trained[key], key


def test_models_and_data_of_different_kinds_are_refused(tmp_path, capsys):
    for argv in (["train", "--model", "vae", "--data", "synthetic-text"],
                 ["train", "--model", "svae", "--data", "digits"],
                 ["compare", "--models", "vae,svae"]):
        assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 2
        line = _error_line(capsys.readouterr().err, argv[0])
        assert ("take images" in line or "take text" in line or "mixes" in line) and "unknown" not in line, line
    assert not (tmp_path / "run").exists()


def test_interrupt_messages_say_what_is_on_disk(tmp_path, monkeypatch, capsys):
    from lidvae_ext.runner import run as experiment

    real_train = experiment.train

    def stop_before(*a, **k):
        raise KeyboardInterrupt

    def stop_after(*a, **k):
        real_train(*a, **k)
        raise KeyboardInterrupt

    out = tmp_path / "new" / "run"
    monkeypatch.setattr(experiment, "train", stop_before)
    assert cli.main(["train", "--model", "vae", "--epochs", "1", "--out", str(out), *TINY]) == 130
    err = capsys.readouterr().err
    assert f"interrupted before the first checkpoint was written; nothing was saved under {out}" in err
    assert "intact" not in err and not (tmp_path / "new").exists()  # the directories it created are gone

    monkeypatch.setattr(experiment, "train", stop_after)
    assert cli.main(["train", "--model", "vae", "--epochs", "1", "--out", str(out), *TINY]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; the last complete checkpoint is intact ({out / 'checkpoint.pt'}); continue with --resume" \
        in err
    before = (out / "checkpoint.pt").read_bytes()

    monkeypatch.setattr(experiment, "train", stop_before)
    assert cli.main(["train", "--model", "vae", "--epochs", "2", "--resume", "--out", str(out), *TINY]) == 130
    err = capsys.readouterr().err
    assert f"interrupted before this run wrote a checkpoint; {out / 'checkpoint.pt'} is unchanged" in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--model", "vae", "--epochs", "1", "--resume", "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert f"[vae] --resume: no checkpoint at {out / 'checkpoint.pt'}; starting a new run" in err
    assert load_checkpoint(out)["epoch"] == 1
    assert cli.main(["train", "--model", "vae", "--epochs", "2", "--resume", "--out", str(out), *TINY]) == 0
    assert "no checkpoint" not in capsys.readouterr().err


def test_failed_run_keeps_existing_directories_and_files(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "empty").mkdir()
    rc = cli.main(["train", "--model", "vae", "--data", str(tmp_path / "none.npy"), "--out", str(out), *TINY])
    assert rc == 2 and "does not exist" in _error_line(capsys.readouterr().err)
    assert (out / "notes.txt").read_text() == "keep me" and (out / "empty").is_dir()


def test_image_arrays_are_flattened_with_a_notice(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "imgs.npy", np.random.default_rng(0).random((40, 8, 8)).astype(np.float32))
    assert cli.main(["train", "--model", "vae", "--epochs", "1", "--no-eval", "--data", str(tmp_path / "imgs.npy"),
                     "--out", str(tmp_path / "run"), *TINY[4:]]) == 0
    err = capsys.readouterr().err
    assert f"note: {tmp_path / 'imgs.npy'} holds an array of shape (40, 8, 8); each row is flattened to 64 values" \
        in err
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).random((40, 64)).astype(np.float32))
    assert cli.main(["train", "--model", "vae", "--epochs", "1", "--no-eval", "--data", str(tmp_path / "rows.npy"),
                     "--out", str(tmp_path / "run2"), *TINY[4:]]) == 0
    assert "flattened" not in capsys.readouterr().err


def test_beta_choices_are_the_decoder_modes():
    """cli keeps its own copy of the β names (no nn import for --help): it must not drift."""
    from lidvae_ext.nn import BETA_MODES

    assert set(cli.BETA_CHOICES) == set(BETA_MODES)
