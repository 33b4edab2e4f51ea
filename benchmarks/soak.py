"""Soak run: long training loops with resident memory recorded, to show the fused ops do not leak.

Trains, for ``--steps`` optimizer steps each (default 20 000):

* ``C1``: the C1 decoder of ``cases.py`` (LIDDecoder B=128 K=64 D=784 H=512 L=2,
  Bernoulli cross-entropy on fixed random targets), Adam on every parameter;
* ``lidvae``: the default model of ``lidvae-ext compare`` that has the fused
  decoder (LIDVAE with the default :class:`lidvae_ext.core.options.ModelOptions`,
  β fitted by PCA) on the digits data, the training step of
  :func:`lidvae_ext.training.train` (dynamic binarization, ``loss.backward()``,
  Adam), batches of 128 cycling over reshuffled epochs.

Every ``--every`` steps (default 1 000) it reads the process's resident set size
(``VmRSS`` in ``/proc/self/status``) and its peak (``VmHWM``). It prints one
table per model, writes everything to ``--json``, and judges each run: the
memory is *flat after warm-up* when the RSS grows by at most ``--tolerance-mb``
(default 8 MiB) between the first sample at or after ``--warmup`` steps (default
2 000) and any later sample. It also prints the least-squares trend of the RSS after
warm-up (MiB per 1 000 steps): a leak grows steadily, allocator noise scatters. Exit
status 1 when a run is not flat.

This is a script, not a test: it takes minutes. Run it at one thread, niced, on
a quiet machine (other processes do not change this process's RSS, but they
stretch the wall time)::

    nice -n 10 python benchmarks/soak.py --threads 1 --json soak.json

Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

import lidvae_ext
from lidvae_ext.core.options import ModelOptions
from lidvae_ext.families import build_from_spec, parse_spec
from lidvae_ext.runner.options import DataOptions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES, make_workload  # noqa: E402

MODELS = ("C1", "lidvae")


def memory_kib() -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of this process in KiB, from ``/proc/self/status``."""
    values: dict[str, int] = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def c1_step(seed: int) -> Callable[[], float]:
    """One Adam step of the C1 decoder per call; returns the loss."""
    work = make_workload(CASES["C1"], seed=seed)
    module = work.module.train()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)

    def step() -> float:
        loss = F.binary_cross_entropy_with_logits(module(work.inputs), work.target, reduction="mean")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def lidvae_step(seed: int, batch_size: int = 128) -> Callable[[], float]:
    """One training step of compare's LIDVAE on digits per call (as in ``training.train``)."""
    opts = ModelOptions()
    ds = DataOptions().load(opts.likelihood)
    torch.manual_seed(seed)
    model = build_from_spec(parse_spec("lidvae"), ds.dim, opts, train_x=ds.train).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = ds.train.shape[0]
    state = {"order": torch.randperm(n), "pos": 0}

    def step() -> float:
        if state["pos"] + batch_size > n:  # next epoch: reshuffle (drops the short tail batch)
            state["order"], state["pos"] = torch.randperm(n), 0
        idx = state["order"][state["pos"]:state["pos"] + batch_size]
        state["pos"] += batch_size
        out = model(ds.train[idx], normalizer=float(batch_size))
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        return float(out["loss"].detach())

    return step


def soak(name: str, steps: int, every: int, seed: int) -> list[dict[str, float]]:
    """Runs ``steps`` steps of model ``name``; one record per ``every`` steps (and step 0)."""
    step = c1_step(seed) if name == "C1" else lidvae_step(seed)
    rss, hwm = memory_kib()
    records = [{"step": 0, "rss_mib": rss / 1024, "hwm_mib": hwm / 1024, "seconds": 0.0, "loss": float("nan")}]
    t0 = time.perf_counter()
    loss = float("nan")
    for i in range(1, steps + 1):
        loss = step()
        if i % every == 0 or i == steps:
            rss, hwm = memory_kib()
            records.append({"step": i, "rss_mib": rss / 1024, "hwm_mib": hwm / 1024,
                            "seconds": time.perf_counter() - t0, "loss": loss})
            print(f"  {name} step {i:>6}: RSS {rss / 1024:8.1f} MiB  loss {loss:.4g}", file=sys.stderr, flush=True)
    return records


def judge(records: list[dict[str, float]], warmup: int, tolerance_mib: float) -> dict[str, float | bool]:
    """Growth of RSS after the first sample at or past ``warmup`` steps, and whether it is within tolerance."""
    after = [r for r in records if r["step"] >= warmup]
    if len(after) < 2:
        raise ValueError(f"need at least two samples at or after step {warmup}; run more steps")
    base = after[0]["rss_mib"]
    growth = max(r["rss_mib"] for r in after) - base
    # least-squares slope of RSS over steps: a steady leak shows as a positive trend, allocator
    # noise (glibc returning freed pages, or not) as scatter around a flat line
    steps = [r["step"] for r in after]
    rss = [r["rss_mib"] for r in after]
    mean_s, mean_r = sum(steps) / len(steps), sum(rss) / len(rss)
    var = sum((x - mean_s) ** 2 for x in steps)
    slope = sum((x - mean_s) * (v - mean_r) for x, v in zip(steps, rss)) / var if var else 0.0
    return {"warmup_step": after[0]["step"], "rss_at_warmup_mib": base, "max_growth_mib": growth,
            "final_growth_mib": after[-1]["rss_mib"] - base,
            "spread_mib": max(rss) - min(rss), "slope_mib_per_1000_steps": 1000 * slope,
            "flat": growth <= tolerance_mib}


def table(name: str, records: list[dict[str, float]]) -> str:
    lines = [f"{name}", "| step | RSS (MiB) | peak RSS (MiB) | s | loss |", "|---:|---:|---:|---:|---:|"]
    for r in records:
        lines.append(f"| {r['step']} | {r['rss_mib']:.1f} | {r['hwm_mib']:.1f} | {r['seconds']:.0f} | {r['loss']:.4g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--every", type=int, default=1_000)
    p.add_argument("--warmup", type=int, default=2_000)
    p.add_argument("--tolerance-mb", type=float, default=8.0, help="allowed RSS growth after warm-up (MiB)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the records and verdicts here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.every < 1:
        p.error("--steps and --every must be >= 1")
    torch.set_num_threads(args.threads)
    info = lidvae_ext.build_info()
    print(f"soak: torch {torch.__version__}, {args.threads} thread(s), lidvae_ext built: {bool(info)}, "
          f"CPU GEMM {info.get('cpu_gemm', '?') if info else '-'}", flush=True)
    result: dict[str, object] = {"steps": args.steps, "every": args.every, "warmup": args.warmup,
                                 "tolerance_mib": args.tolerance_mb, "threads": args.threads,
                                 "torch": torch.__version__, "runs": {}}
    ok = True
    for name in args.models:
        records = soak(name, args.steps, args.every, args.seed)
        verdict = judge(records, args.warmup, args.tolerance_mb)
        ok = ok and bool(verdict["flat"])
        result["runs"][name] = {"records": records, "verdict": verdict}  # type: ignore[index]
        print(table(name, records))
        print(f"{name}: RSS {verdict['rss_at_warmup_mib']:.1f} MiB at step {verdict['warmup_step']}, "
              f"max growth after it {verdict['max_growth_mib']:+.1f} MiB (tolerance {args.tolerance_mb} MiB), "
              f"trend {verdict['slope_mib_per_1000_steps']:+.3f} MiB per 1000 steps: "
              f"{'flat' if verdict['flat'] else 'NOT flat'}\n", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        print(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
