"""How a training step's cost grows: step time against B, d, H and L, fused vs JAX vs eager, log–log.

Each curve family varies one size around a base ``BrenierMap`` training step (the Σg² loss of
cases C3/C4; base B = 256, d = 64, H = 256, L = 2) and times, per point, interleaved:

* ``fused``: the package's operators;
* ``jax``: ``jax.jit`` of the same function, the faster of its two formulations at that point
  (benchmarks/baselines.py: one stacked input product, or one per layer);
* ``eager``: the official LIDVAE way (per-layer ``F.linear``, ``autograd.grad(create_graph=True)``).

Every baseline is checked equal to the fused output before it is timed. Writes
``scaling.json`` (one row per point and implementation) and ``scaling.png`` (four panels).

    python benchmarks/scaling.py --out benchmarks/results/scaling            # the full sweep
    python benchmarks/scaling.py --quick --out /tmp/s                        # a smoke run

For timings worth quoting, run on an idle machine and say so (the OpenBLAS variables of this
workplace may be unset for a benchmark command: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import as_numpy, eager_callables  # noqa: E402
from cases import Case, make_workload  # noqa: E402
from machine import describe_machine  # noqa: E402
from run import time_interleaved  # noqa: E402

BASE = {"batch": 256, "dim": 64, "hidden": 256, "layers": 2}
SWEEPS = {
    "batch": [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536],
    "dim": [2, 8, 32, 128, 512, 1024],
    "hidden": [16, 64, 256, 1024, 2048],
    "layers": [1, 2, 3, 4, 6],
}
QUICK = {"batch": [1, 64], "dim": [2, 16], "hidden": [8, 32], "layers": [1, 2]}
SYMBOLS = {"batch": "B", "dim": "d", "hidden": "H", "layers": "L"}
LABELS = {"batch": "batch B", "dim": "input dimension d", "hidden": "ICNN width H", "layers": "ICNN depth L"}


def _case(sizes: dict[str, int]) -> Case:
    return Case("scaling", "map", sizes["batch"], sizes["dim"], sizes["hidden"], sizes["layers"])


def _jax_variants(work) -> dict[str, object]:
    """The JAX training steps of both formulations, or none without JAX."""
    try:
        from baselines import JAX_FORMULATIONS, jax_callables
    except ImportError:  # pragma: no cover - the baselines module always imports; JAX may not
        return {}
    try:
        return {f"jax-{f}": jax_callables(work.module, work.inputs, work.case.kind, work.target, f)["train"]
                for f in JAX_FORMULATIONS}
    except ImportError:
        return {}


def time_point(sizes: dict[str, int], reps: int, warmup: int, tol: float = 1e-4) -> dict[str, float]:
    """Median milliseconds of one training step per implementation at ``sizes`` (baselines checked first)."""
    work = make_workload(_case(sizes), "cpu", torch.float32)
    fused = work.fn("fused", "train")
    want = as_numpy(fused())
    fns = {"fused": fused, "eager": eager_callables(work.module, work.inputs, work.loss)["train"],
           **_jax_variants(work)}
    for name, fn in list(fns.items())[1:]:
        got = as_numpy(fn())
        err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))
        if err > tol:
            raise RuntimeError(f"{name} differs from the fused step at {sizes} (relative error {err:.1e})")
    times = time_interleaved(fns, reps, warmup, "cpu", time.perf_counter)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    jax = {k: v for k, v in med.items() if k.startswith("jax-")}
    if jax:
        best = min(jax, key=jax.get)
        med["jax"] = jax[best]
        med["jax_formulation"] = best.removeprefix("jax-")
    return med


def plot(rows: list[dict], path: Path) -> None:
    """Four log–log panels, one per swept size: ms per training step for fused, JAX and eager."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    styles = {"fused": ("tab:blue", "o-"), "jax": ("tab:orange", "s--"), "eager": ("tab:gray", "^:")}
    for ax, family in zip(axes, SWEEPS):
        pts = [r for r in rows if r["sweep"] == family]
        for impl, (color, style) in styles.items():
            xs = [r["value"] for r in pts if impl in r]
            if xs:
                ax.plot(xs, [r[impl] for r in pts if impl in r], style, color=color, ms=4, label=impl)
        ax.set_xscale("log", base=2 if family == "layers" else 10)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        if any(r["value"] == BASE[family] for r in pts):
            ax.axvline(BASE[family], color="k", lw=0.6, ls=":")  # the base point every other panel shares
        ax.xaxis.set_minor_formatter(NullFormatter())
        fixed = ", ".join(f"{SYMBOLS[k]}={pts[0][k] if pts else v}" for k, v in BASE.items() if k != family)
        ax.set_title(f"vs {LABELS[family]} ({fixed})", fontsize=9)
        ax.set_xlabel(LABELS[family])
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
    axes[0].set_ylabel("ms per training step (median)")
    axes[0].legend(fontsize=8)
    fig.suptitle("BrenierMap training step (Σg² loss), float32, CPU: fused vs jax.jit (faster formulation) "
                 "vs official-style eager", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for scaling.json and scaling.png")
    parser.add_argument("--reps", type=int, default=7, help="interleaved repetitions per point")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="two small points per family (a smoke run)")
    parser.add_argument("--families", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    args = parser.parse_args(argv)
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps must be >= 1 and --warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sweeps = QUICK if args.quick else SWEEPS
    print(describe_machine(), flush=True)
    rows: list[dict] = []
    for family in args.families:
        for value in sweeps[family]:
            sizes = {**BASE, family: value}
            if args.quick:
                sizes = {**{k: v[0] for k, v in QUICK.items()}, "batch": 8, family: value}
            med = time_point(sizes, args.reps, args.warmup)
            rows.append({"sweep": family, "value": value, **sizes, **med})
            ratio = f", fused vs jax {med['jax'] / med['fused']:.2f}×" if "jax" in med else ""
            print(f"{family}={value}: fused {med['fused']:.3f} ms, eager {med['eager']:.3f} ms"
                  + (f", jax {med['jax']:.3f} ms ({med['jax_formulation']})" if "jax" in med else "")
                  + f"{ratio}, fused vs eager {med['eager'] / med['fused']:.2f}×", flush=True)
            (out / "scaling.json").write_text(json.dumps({"base": BASE, "threads": torch.get_num_threads(),
                                                          "torch": torch.__version__, "rows": rows}, indent=1))
    if args.families == list(SWEEPS):
        plot(rows, out / "scaling.png")
        print(f"wrote {out / 'scaling.json'} and {out / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
