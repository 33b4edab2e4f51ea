"""benchmarks/run.py --json: one row per timed implementation, appended across runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.skipif(not (BENCH / "run.py").exists(), reason="benchmarks/ not in this checkout")


def test_json_rows_appended(tmp_path, capsys):
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / "rows.json"
    args = ["--cases", "C3", "--modes", "map", "--reps", "1", "--warmup", "0", "--no-jax", "--no-eager",
            "--json", str(out)]
    assert run.main(args) == 0
    assert run.main([*args[:-2], "--dtype", "float64", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["impl"], r["dtype"]) for r in rows] == [("fused", "float32"), ("reference", "float32"),
                                                       ("fused", "float64"), ("reference", "float64")]
    for r in rows:
        assert r["case"] == "C3" and r["mode"] == "map" and r["batch"] == 4096 and r["ms"] > 0
    table = capsys.readouterr().out
    assert "| C3 | map |" in table
    out.write_text("{}")
    with pytest.raises(SystemExit, match="no JSON list"):
        run.main(args)


def _import_run():
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
    return run


@pytest.mark.parametrize("schedule", ["interleaved", "blocks"])
def test_schedule_call_order(schedule):
    """--schedule: round-robin calls, or each callable's warm-up and reps back to back."""
    run = _import_run()
    calls: list[str] = []
    fns = {name: (lambda name=name: calls.append(name)) for name in ("a", "b")}
    timer = run.time_blocks if schedule == "blocks" else run.time_interleaved
    times = timer(fns, reps=3, warmup=2, device="cpu")
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    if schedule == "blocks":
        assert calls == ["a"] * 5 + ["b"] * 5
    else:
        assert calls == ["a", "b"] * 5


def test_schedule_blocks_in_header(capsys):
    run = _import_run()
    args = ["--cases", "C3", "--modes", "map", "--reps", "1", "--warmup", "0", "--no-jax", "--no-eager",
            "--schedule", "blocks"]
    assert run.main(args) == 0
    out = capsys.readouterr().out
    assert "reps=1 in separate blocks" in out and "| C3 | map |" in out


def test_every_baseline_column_is_checked_and_timed(tmp_path, capsys):
    """eager, torch.compile (and JAX where installed) pass the check against the fused output in
    both modes: a column whose output is laid out differently would show up as a mismatch."""
    run = _import_run()
    out = tmp_path / "rows.json"
    assert run.main(["--cases", "C3", "--reps", "1", "--warmup", "0", "--compile", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mismatch" not in table, table
    timed = {(r["mode"], r["impl"]) for r in json.loads(out.read_text())}
    impls = ["fused", "eager", "compiled", "reference"]
    try:
        import jax  # noqa: F401
        impls += ["jax", "jax-stacked", "jax-per_layer"]  # both formulations timed; the column is the faster
    except ImportError:
        assert "not installed" in table
    for mode in ("map", "train"):
        for impl in impls:
            assert (mode, impl) in timed, (mode, impl, sorted(timed))


def test_json_rows_survive_an_interrupted_run(tmp_path, monkeypatch):
    """Rows are written after every table row, so a run stopped by a time limit keeps them."""
    run = _import_run()
    real_timer, calls = run.time_interleaved, []

    def timer_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # stands for the stage's timeout
        return real_timer(*args, **kwargs)

    monkeypatch.setattr(run, "time_interleaved", timer_then_stop)
    out = tmp_path / "rows.json"
    with pytest.raises(KeyboardInterrupt):
        run.main(["--cases", "C3", "--reps", "1", "--warmup", "0", "--no-jax", "--no-eager", "--json", str(out)])
    rows = json.loads(out.read_text())
    assert {(r["mode"], r["impl"]) for r in rows} == {("map", "fused"), ("map", "reference")}


def test_jax_formulations_are_the_same_function():
    """The stacked and the per-layer JAX ICNN compute the same map and gradients (so timing both and
    reporting the faster compares like with like)."""
    pytest.importorskip("jax")
    import numpy as np
    import torch

    run = _import_run()
    from baselines import as_numpy, jax_callables

    for case in ("C3", "C1"):
        work = run.make_workload(run.CASES[case], "cpu", torch.float64)
        got = {f: jax_callables(work.module, work.inputs, work.case.kind, work.target, f)
               for f in ("stacked", "per_layer")}
        for mode in ("map", "train"):
            a, b = as_numpy(got["stacked"][mode]()), as_numpy(got["per_layer"][mode]())
            np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="formulation"):
        jax_callables(work.module, work.inputs, work.case.kind, work.target, "fused")


def test_scaling_benchmark_smoke_run(tmp_path):
    """benchmarks/scaling.py checks every baseline against the fused step and writes one row per point."""
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"
    spec = importlib.util.spec_from_file_location("scaling", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--reps", "1", "--warmup", "0", "--families", "batch", "layers",
                     "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert [(r["sweep"], r["value"]) for r in rows] == [("batch", 1), ("batch", 64), ("layers", 1), ("layers", 2)]
    assert all(r["fused"] > 0 and r["eager"] > 0 for r in rows)
    assert rows[-1]["layers"] == 2 and rows[0]["batch"] == 1


def _load_script(name):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_price_benchmark_smoke_run(tmp_path, capsys):
    """benchmarks/price.py trains both models interleaved and accounts every phase of the step."""
    mod = _load_script("price")
    out = tmp_path / "price.json"
    assert mod.main(["--epochs", "1", "--latent-dim", "4", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"vae", "lidvae"}
    for row in rows.values():
        assert set(row["ms_per_step"]) == set(mod.PHASES)
        assert all(v >= 0 for v in row["ms_per_step"].values()) and row["ms_per_step"]["decoder"] > 0
        steps = -(-1438 // 128)  # digits' 1438 training rows at seed 0
        assert abs(sum(row["ms_per_step"].values()) * steps / 1e3 - row["train_s"]) < 0.05 * row["train_s"] + 0.01
    assert "price lidvae / vae" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        mod.main(["--models", "vae"])


@pytest.mark.parametrize("data,models", [("digits", ("vae", "lidvae")), ("synthetic-text", ("svae", "lidsvae"))])
def test_price_benchmark_counts_flops(tmp_path, capsys, data, models):
    """--flops counts one step per model (the fused operators through their formulas) and leaves the
    timed phases untouched (the counted step is not added to the first epoch's clocks)."""
    mod = _load_script("price")
    out = tmp_path / "price.json"
    argv = ["--data", data, "--epochs", "1", "--latent-dim", "4", "--flops", "--json", str(out)]
    if data == "synthetic-text":
        argv += ["--train-size", "256"]
    assert mod.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == set(models)
    for row in rows.values():
        assert row["step_mflop"] > 0
        assert all(v >= 0 for v in row["ms_per_step"].values()), row["ms_per_step"]
    assert "FLOPs per training step (counted)" in capsys.readouterr().out


def test_workloads_are_the_same_function_in_every_run():
    """make_workload draws the weights from its seed too (without touching the global RNG), so two
    runs of a case time the same function and a failed equality check is not a matter of chance."""
    import torch

    mod = _load_script("cases")
    state = torch.random.get_rng_state()
    a, b = (mod.make_workload(mod.CASES["C3"]) for _ in range(2))
    assert torch.equal(torch.random.get_rng_state(), state)
    for p, q in zip(a.module.parameters(), b.module.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(a.inputs, b.inputs)
    other = mod.make_workload(mod.CASES["C3"], seed=1)
    assert not torch.equal(next(other.module.parameters()), next(a.module.parameters()))
