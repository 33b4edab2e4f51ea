"""The price of identifiability: whole-run training time of an LID model against its baseline.

Both models train in ONE process on the same data, interleaved by epoch (baseline epoch 1, LID
epoch 1, baseline epoch 2, ...), each with its own Adam and the training loop's step (forward
with the loss normalizer, backward, optimizer step; dynamic binarization as the CLI does), so a
noisy machine slows both alike. Per model it reports the total training seconds, the
ratio LID / baseline, and where a step's time goes, measured on every step:

* ``encoder`` / ``decoder`` forward (forward hooks on ``model.encoder`` / ``model.decoder``;
  a mixture model's q(y|x) network counts as encoder),
* the rest of the forward (ELBO terms: likelihood, KL, sampling),
* ``backward``, ``optimizer`` (Adam step and zero_grad), and the loop's own Python
  (batch indexing, loss bookkeeping): the step's wall time minus the timed phases.

    python benchmarks/price.py --data digits --models vae,lidvae --epochs 20
    python benchmarks/price.py --data fashion-mnist --train-size 8000 --models vae,lidvae
    python benchmarks/price.py --data digits --models gmvae,lidgmvae
    python benchmarks/price.py --data synthetic-text --models svae,lidsvae --flops

The model options are the CLI's defaults (images ``ModelOptions()``: K = 32, MLPs 256×2, ICNN
128×2, α = 0.5, the family's β; Bernoulli with dynamic binarization; sentences
``TextModelOptions()``: LSTMs 128, ICNN 64×2), batch 128, Adam 1e-3. ``--flops`` also counts one
training step of each model with ``torch.utils.flop_counter.FlopCounterMode`` (the fused
operators' matrix products through their registered formulas, :mod:`lidvae_ext.flops`): the
FLOP ratio is the price a step would have if every model ran at the same FLOP rate. For numbers
worth quoting run on an idle machine (``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``) and say so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from torch.utils.flop_counter import FlopCounterMode

from lidvae_ext.core.options import ModelOptions
from lidvae_ext.data.images import load_digits, load_fashion_mnist
from lidvae_ext.data.text.corpus import load_text_dataset
from lidvae_ext.families import build_from_spec, parse_spec
from lidvae_ext.families.sentence import build_sentence
from lidvae_ext.families.sentence.models import LIDSVAE
from lidvae_ext.families.sentence.options import TextModelOptions

PHASES = ("encoder", "decoder", "elbo_rest", "backward", "optimizer", "loop")
TEXT_DATA = ("synthetic-text", "wordnet")
# The modules whose forward time counts as encoder / decoder, where a model has them (the
# image families' encoder / q(y|x) network / decoder; the sentence VAEs' LSTMs and heads).
ENCODER_PARTS = ("encoder", "cluster_encoder", "encoder_rnn", "to_posterior")
DECODER_PARTS = ("decoder", "decoder_rnn", "init_state", "output", "token_decoder")


class PhaseClock:
    """Wall time of a module's forward calls, summed, through pre/post forward hooks."""

    def __init__(self, *modules: torch.nn.Module | None) -> None:
        self.total = 0.0
        self._start = 0.0
        for module in modules:
            if module is not None:
                module.register_forward_pre_hook(self._pre)
                module.register_forward_hook(self._post)

    def _pre(self, *_) -> None:
        self._start = time.perf_counter()

    def _post(self, *_) -> None:
        self.total += time.perf_counter() - self._start

    def take(self) -> float:
        spent, self.total = self.total, 0.0
        return spent


class Runner:
    """One model with its optimizer, data order and per-phase clocks."""

    def __init__(self, name: str, model: torch.nn.Module, seed: int) -> None:
        self.name = name
        self.model = model
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.encoder = PhaseClock(*(getattr(self.model, part, None) for part in ENCODER_PARTS))
        self.decoder = PhaseClock(*(getattr(self.model, part, None) for part in DECODER_PARTS))
        self.seconds = {p: 0.0 for p in PHASES}
        self.epoch_seconds: list[float] = []
        self.seed = seed

    def epoch(self, x: torch.Tensor, batch_size: int, epoch: int) -> None:
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        torch.manual_seed(self.seed * 1_000_003 + epoch)
        start_epoch = time.perf_counter()
        for start in range(0, x.shape[0], batch_size):
            t0 = time.perf_counter()
            xb = x[order[start:start + batch_size]]
            t1 = time.perf_counter()
            out = self.model(xb, normalizer=xb.shape[0])
            t2 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            t3 = time.perf_counter()
            self.optimizer.step()
            t4 = time.perf_counter()
            float(out["rec"]), float(out["kl"])  # the loop's bookkeeping reads both
            t5 = time.perf_counter()
            enc, dec = self.encoder.take(), self.decoder.take()
            self.seconds["encoder"] += enc
            self.seconds["decoder"] += dec
            self.seconds["elbo_rest"] += (t2 - t1) - enc - dec
            self.seconds["backward"] += t3 - t2
            self.seconds["optimizer"] += t4 - t3
            self.seconds["loop"] += (t1 - t0) + (t5 - t4)
        self.epoch_seconds.append(time.perf_counter() - start_epoch)

    def step_flops(self, x: torch.Tensor, batch_size: int) -> int:
        """FLOPs of one training step (forward and backward) on the first batch, counted."""
        xb = x[:batch_size]
        with FlopCounterMode(display=False) as counter:
            out = self.model(xb, normalizer=xb.shape[0])
            out["loss"].backward()
        self.model.zero_grad(set_to_none=True)
        self.encoder.take(), self.decoder.take()  # this step is not one of the timed ones
        return int(counter.get_total_flops())


def load(args: argparse.Namespace):
    if args.data == "digits":
        return load_digits(seed=args.seed)
    if args.data in TEXT_DATA:
        return load_text_dataset(args.data, train_size=args.train_size, seed=args.seed)
    return load_fashion_mnist(train_size=args.train_size, test_size=1000, seed=args.seed)


def build(name: str, ds, args: argparse.Namespace) -> torch.nn.Module:
    """The model ``name`` with the CLI's default options, seeded."""
    torch.manual_seed(args.seed)
    spec = parse_spec(name)
    if args.data in TEXT_DATA:
        model = build_sentence(spec, len(ds.vocab), TextModelOptions(latent_dim=args.latent_dim))
        if isinstance(model, LIDSVAE):
            model.fit_beta(ds.train)
        return model
    opts = ModelOptions(latent_dim=args.latent_dim, binarize=True, clusters=args.clusters)
    return build_from_spec(spec, ds.dim, opts, train_x=ds.train)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("digits", "fashion-mnist", *TEXT_DATA), default="digits")
    p.add_argument("--train-size", type=int, default=None,
                   help="training rows of Fashion-MNIST or sentences (default: all / the dataset's)")
    p.add_argument("--models", default=None,
                   help="baseline,lid (two model names; default vae,lidvae, or svae,lidsvae for sentences)")
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--clusters", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--flops", action="store_true", help="also count one training step's FLOPs per model")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    if args.models is None:
        args.models = "svae,lidsvae" if args.data in TEXT_DATA else "vae,lidvae"
    names = args.models.split(",")
    if len(names) != 2:
        p.error(f"--models needs two names (baseline,lid), got {args.models!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load(args)
    runners = [Runner(n, build(n, ds, args), args.seed) for n in names]
    flops = {r.name: r.step_flops(ds.train, args.batch_size) for r in runners} if args.flops else {}
    for epoch in range(args.epochs):
        for r in runners:
            r.epoch(ds.train, args.batch_size, epoch)
    steps = args.epochs * -(-ds.train.shape[0] // args.batch_size)
    width = f"|V|={len(ds.vocab)}" if args.data in TEXT_DATA else f"D={ds.dim}"
    print(f"{ds.name}: {ds.train.shape[0]} rows, {width}, K={args.latent_dim}, batch {args.batch_size}, "
          f"{args.epochs} epochs interleaved, {torch.get_num_threads()} threads")
    rows = {}
    for r in runners:
        total = sum(r.epoch_seconds)
        rows[r.name] = {"train_s": total, "median_epoch_s": statistics.median(r.epoch_seconds),
                        "ms_per_step": {k: v / steps * 1e3 for k, v in r.seconds.items()}}
        if flops:
            rows[r.name]["step_mflop"] = flops[r.name] / 1e6
        shares = "  ".join(f"{k} {v / steps * 1e3:.2f}" for k, v in r.seconds.items())
        print(f"{r.name:12s} {total:8.2f} s (median epoch {statistics.median(r.epoch_seconds):.3f} s); "
              f"ms/step: {shares}")
    base, lid = (rows[n]["train_s"] for n in names)
    print(f"price {names[1]} / {names[0]}: {lid / base:.3f}x (whole run), "
          f"{rows[names[1]]['median_epoch_s'] / rows[names[0]]['median_epoch_s']:.3f}x (median epoch)")
    if flops:
        print(f"FLOPs per training step (counted): {names[0]} {flops[names[0]] / 1e6:.1f} M, "
              f"{names[1]} {flops[names[1]] / 1e6:.1f} M, ratio {flops[names[1]] / flops[names[0]]:.3f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
