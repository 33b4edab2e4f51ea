"""Drop-in, PyTorch Lightning: a ``LightningModule`` VAE with an MLP or a LIDDecoder; ``--strategy ddp`` for DDP.

Run: ``python examples/lightning_vae.py`` (needs ``pip install .[examples]`` for
``lightning``), or ``--strategy ddp --devices 2`` for two CPU processes (gloo);
each process then takes ``batch_size / devices`` rows a step, so the global batch
and the number of steps stay those of the one-process run.
"""

import logging
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Encoder, load, make_decoder, measure, parser, report  # noqa: E402


class LitVAE(L.LightningModule):
    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module, lr: float) -> None:
        super().__init__()
        self.encoder, self.decoder, self.lr = encoder, decoder, lr

    def training_step(self, batch, batch_idx):
        x = torch.bernoulli(batch[0])  # dynamic binarization
        mu, logvar = self.encoder(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        rec = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
        return (rec + kl).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0], epochs=100)
    p.add_argument("--strategy", default="auto", help="auto (one process) or ddp")
    p.add_argument("--devices", type=int, default=1, help="CPU processes (ddp)")
    args = p.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner per fit
    if args.batch_size % args.devices:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of --devices {args.devices}")
    x_train, x_test = load(args)
    d, k = x_train.shape[1], args.latent_dim
    rows = []
    for name in args.decoders.split(","):
        torch.manual_seed(args.seed)
        decoder = make_decoder(name, k, x_train, args.hidden)
        vae = LitVAE(Encoder(d, k), decoder, args.lr)
        loader = DataLoader(TensorDataset(x_train), batch_size=args.batch_size // args.devices, shuffle=True,
                            generator=torch.Generator().manual_seed(args.seed))
        trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=args.devices, strategy=args.strategy,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        start = time.perf_counter()
        trainer.fit(vae, loader)
        seconds = time.perf_counter() - start
        if trainer.is_global_zero:
            rows.append(measure(name, vae.encoder, vae.decoder, x_test, args, seconds))
    if rows:
        report(rows, args)


if __name__ == "__main__":
    main()
