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
from lidvae_ext.training import load_checkpoint

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
    from lidvae_ext import experiment

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "run_train", boom)
    assert cli.main(["train", "--out", str(tmp_path), "--no-progress"]) == 130
    assert "--resume" in capsys.readouterr().err


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
