"""What every drop-in example shares: data, an MLP encoder/decoder pair, and the results table.

The examples compare an MLP decoder with a :class:`lidvae_ext.LIDDecoder` in a
VAE written with one library each, on the same data and budget, and print the
project's collapse metrics (:func:`lidvae_ext.evaluate_vae`, the code the CLI uses).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any

import torch
from torch import nn

from lidvae_ext import LIDDecoder, evaluate_vae
from lidvae_ext.data import load_dataset


def parser(description: str, epochs: int) -> argparse.ArgumentParser:
    """The options every example takes (its default budget: ``epochs``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="digits", help="digits (bundled 8×8) or fashion-mnist (Debian package)")
    p.add_argument("--train-size", type=int, default=8000, help="fashion-mnist training rows")
    p.add_argument("--test-size", type=int, default=2000, help="fashion-mnist held-out rows")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128, help="LIDDecoder ICNN width")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--iwae-samples", type=int, default=100)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--decoders", default=",".join(DECODERS), help=DECODER_HELP)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    return p


def load(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, test)`` rows in [0, 1], (N, D) float32; the test rows binarized once (seeded)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = {} if args.data == "digits" else {"train_size": args.train_size, "test_size": args.test_size}
    ds = load_dataset(args.data, seed=args.seed, **sizes)
    test = torch.bernoulli(ds.test, generator=torch.Generator().manual_seed(args.seed))
    print(f"{ds.name}: {ds.train.shape[0]} train / {ds.test.shape[0]} test rows, D={ds.dim}, "
          f"K={args.latent_dim}, {args.epochs} epochs, batch {args.batch_size}, Adam {args.lr}, seed {args.seed}")
    return ds.train, test


class Encoder(nn.Module):
    """x (B, D) -> (mean, logvar) of q(z|x), an MLP with two hidden layers of 256."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(data_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.net(x).chunk(2, dim=-1)
        return mean, logvar


def mlp_decoder(latent_dim: int, data_dim: int, hidden: int = 256) -> nn.Module:
    """z -> logits, the MLP decoder the LIDDecoder replaces."""
    return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, data_dim))


DECODERS = ("mlp", "lid", "lid-data")
DECODER_HELP = """decoders, comma-separated (the first is the baseline of the "vs first" column):
  mlp                  MLP K -> 256 -> 256 -> D
  lid                  LIDDecoder(K, D, hidden): the bare constructor (no data)
  lid-data             LIDDecoder.from_data(x_train, K, hidden): β on the principal directions
  lid-paper            LIDDecoder.paper(K, D, hidden): α = 0, β = [I; 0], clamped weights
  lid-<beta>-a<alpha>  LIDDecoder(K, D, hidden, beta=<beta>, strong_convexity=<alpha>), beta in
                       fixed, random, learned, pca (pca: fitted on the training rows)"""


def make_decoder(name: str, latent_dim: int, x_train: torch.Tensor, hidden: int) -> nn.Module:
    """The decoder (z -> logits) that ``name`` names; see ``DECODER_HELP``."""
    data_dim = x_train.shape[1]
    if name == "mlp":
        return mlp_decoder(latent_dim, data_dim)
    if name == "lid":
        return LIDDecoder(latent_dim, data_dim, hidden=hidden)
    if name == "lid-data":
        return LIDDecoder.from_data(x_train, latent_dim, hidden=hidden)
    if name == "lid-paper":
        return LIDDecoder.paper(latent_dim, data_dim, hidden=hidden)
    m = re.fullmatch(r"lid-(fixed|random|pca|learned)-a([0-9.]+)", name)
    if m is None:
        raise SystemExit(f"unknown decoder {name!r}:\n{DECODER_HELP}")
    beta, alpha = m.group(1), float(m.group(2))
    if beta == "pca":
        return LIDDecoder.from_data(x_train, latent_dim, hidden=hidden, strong_convexity=alpha)
    return LIDDecoder(latent_dim, data_dim, hidden=hidden, beta=beta, strong_convexity=alpha)


def measure(name: str, encoder: Any, decoder: Any, test: torch.Tensor, args: argparse.Namespace,
            seconds: float) -> dict[str, Any]:
    """The collapse metrics of one trained VAE on the held-out rows (encoder -> (mean, logvar), decoder -> logits)."""
    m = evaluate_vae(encoder, decoder, test, "bernoulli", iwae_samples=args.iwae_samples, seed=args.seed)
    return {"decoder": name, "latent_dim": m["latent_dim"], "active_units_at": m["active_units_at"],
            "kl": m["kl"], "mutual_info": m["mutual_info"], "neg_elbo": m["neg_elbo"], "iwae_nll": m["iwae_nll"],
            "train_seconds": seconds}


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the comparison (the first row is the baseline) and write ``--json``."""
    base = rows[0]
    print("| decoder | AU ≥ 0.01 | AU ≥ 0.1 | KL | MI | −ELBO | IWAE NLL | vs first | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k, au = r["latent_dim"], r["active_units_at"]
        rel = 100.0 * (r["iwae_nll"] / base["iwae_nll"] - 1.0)
        print(f"| {r['decoder']} | {au['0.01']}/{k} | {au['0.1']}/{k} | {r['kl']:.2f} | {r['mutual_info']:.2f} | "
              f"{r['neg_elbo']:.2f} | {r['iwae_nll']:.2f} | {rel:+.1f} % | {r['train_seconds']:.0f} |", flush=True)
    for r in rows:
        if not all(math.isfinite(r[key]) for key in ("kl", "mutual_info", "neg_elbo", "iwae_nll")):
            raise SystemExit(f"{r['decoder']}: non-finite metrics {r}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), "rows": rows}, handle, indent=1)
