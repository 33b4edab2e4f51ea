"""Tokens/s of a sentence-VAE training step: LIDSVAE fused vs autograd reference (and the SVAE).

One training step = encoder + LSTM decoder + token logits for every real
token of the batch + cross-entropy + KL + backward + Adam. Tokens are the
predicted ones (words and ``</s>``). The backends are timed *interleaved*
(round-robin over ``--rounds``, median per backend) on the same batches of
``synthetic-text``, so machine load affects them alike; on a shared machine
the absolute numbers are still noisy, the ratio less so.

Usage::

    python benchmarks/text_throughput.py                       # defaults of `compare --data synthetic-text`
    python benchmarks/text_throughput.py --hidden 256 --icnn-hidden 128 --batch 128 --threads 2
    python benchmarks/text_throughput.py --beta pca           # β = token-PCA directions (Q[I; 0])
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from lidvae_ext.families.sentence.models import LIDSVAE, SVAE
from lidvae_ext.ops import fused_available
from lidvae_ext.data.text import load_text_dataset


def build(kind: str, vocab: int, args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(vocab_size=vocab, latent_dim=args.latent_dim, embed_dim=args.embed_dim, hidden=args.hidden)
    if kind == "svae":
        return SVAE(**common)
    return LIDSVAE(icnn_hidden=args.icnn_hidden, icnn_layers=args.icnn_layers, backend=kind.split("-")[1],
                   beta=args.beta, **common)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="training steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--icnn-hidden", type=int, default=64)
    p.add_argument("--icnn-layers", type=int, default=2)
    p.add_argument("--beta", default="fixed", choices=("fixed", "pca", "learned", "random"), help="LIDSVAE β")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_text_dataset("synthetic-text", train_size=args.batch * args.steps, val_size=1, test_size=1)
    batches = [ds.train[i:i + args.batch] for i in range(0, ds.train.shape[0], args.batch)]
    tokens = sum(int((b != 0).sum()) - b.shape[0] for b in batches)
    kinds = ["svae", "lidsvae-reference"] + (["lidsvae-fused"] if fused_available("cpu") else [])
    models = {k: build(k, len(ds.vocab), args) for k in kinds}
    for m in models.values():
        if isinstance(m, LIDSVAE):
            m.fit_beta(ds.train)
    opts = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in models.items()}

    def run(kind: str) -> float:
        m, opt = models[kind], opts[kind]
        t0 = time.perf_counter()
        for xb in batches:
            loss = m(xb)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    for k in kinds:  # warm-up
        run(k)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k in kinds:
            times[k].append(run(k))
    out = {"tokens_per_round": tokens, "threads": torch.get_num_threads(), "config": vars(args),
           "tokens_per_s": {k: tokens / statistics.median(v) for k, v in times.items()}}
    if "lidsvae-fused" in out["tokens_per_s"]:
        tps = out["tokens_per_s"]
        out["fused_speedup"] = tps["lidsvae-fused"] / tps["lidsvae-reference"]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{tokens} tokens per round, batch {args.batch}, β {args.beta}, {torch.get_num_threads()} threads, "
              f"median of {args.rounds} interleaved rounds")
        print("| model / backend | tokens/s |\n|---|---|")
        for k, v in out["tokens_per_s"].items():
            print(f"| {k} | {v:.0f} |")
        if "fused_speedup" in out:
            print(f"fused / reference: {out['fused_speedup']:.2f}x")
    return out


if __name__ == "__main__":
    main()
