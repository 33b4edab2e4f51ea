"""Drop-in, plain PyTorch: the README's VAE (verbatim) with an MLP decoder and with LIDDecoders.

Run: ``python examples/plain_pytorch.py`` (bundled digits, 100 epochs, about a minute on
2 cores) or ``--data fashion-mnist`` (8k/2k rows, about 5 minutes a decoder). ``lid`` is
the snippet's own decoder; ``--decoders`` names others (``--help``).
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Encoder, load, make_decoder, measure, parser, report  # noqa: E402

from lidvae_ext import LIDDecoder  # noqa: E402


# --- the README's snippet, verbatim ---------------------------------------------------------
class MyVAE(torch.nn.Module):
    def __init__(self, encoder, latent_dim=32, data_dim=784):
        super().__init__()
        self.encoder = encoder                      # x -> (mu, logvar), unchanged
        self.decoder = LIDDecoder(latent_dim, data_dim, hidden=128)   # was: an MLP
    def forward(self, x):
        mu, logvar = self.encoder(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        logits = self.decoder(z)                    # injective in z
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
        return (rec + kl).mean()
# ---------------------------------------------------------------------------------------------


def train(vae: MyVAE, x_train: torch.Tensor, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """Adam on the snippet's loss, dynamic binarization; returns the seconds it took."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(x_train.shape[0], generator=gen).split(batch_size):
            loss = vae(torch.bernoulli(x_train[idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0], epochs=100).parse_args(argv)
    x_train, x_test = load(args)
    rows = []
    for name in args.decoders.split(","):
        torch.manual_seed(args.seed)  # the same encoder initialization for every decoder
        vae = MyVAE(Encoder(x_train.shape[1], args.latent_dim), args.latent_dim, x_train.shape[1])
        if name != "lid" or args.hidden != 128:  # "lid" at width 128: the snippet's own LIDDecoder
            vae.decoder = make_decoder(name, args.latent_dim, x_train, args.hidden)
        seconds = train(vae, x_train, args.epochs, args.batch_size, args.lr, args.seed)
        rows.append(measure(name, vae.encoder, vae.decoder, x_test, args, seconds))
    report(rows, args)


if __name__ == "__main__":
    main()
