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
