"""Drop-in, Pyro: a VAE trained by SVI (``Trace_ELBO``) with an MLP or a LIDDecoder as its PyroModule decoder.

Run: ``python examples/pyro_svi.py`` (needs ``pip install .[examples]`` for ``pyro-ppl``).
The decoder is an ordinary module turned into a ``PyroModule`` in place
(``to_pyro_module_``), so Pyro's optimizer trains the LIDDecoder's parameters like
any other; nothing else in the model or guide changes.
"""

import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Encoder, load, make_decoder, measure, parser, report  # noqa: E402


class PyroVAE(PyroModule):
    """p(z) = N(0, I), p(x|z) = Bernoulli(logits = decoder(z)); q(z|x) = N(encoder(x))."""

    def __init__(self, encoder: torch.nn.Module, decoder: torch.nn.Module, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = to_pyro_module_(encoder) or encoder
        self.decoder = to_pyro_module_(decoder) or decoder

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], self.latent_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        mean, logvar = self.encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(mean, (0.5 * logvar).exp()).to_event(1))


def train(vae: PyroVAE, x_train: torch.Tensor, args) -> float:
    pyro.clear_param_store()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": args.lr}), Trace_ELBO())
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for idx in torch.randperm(x_train.shape[0], generator=gen).split(args.batch_size):
            svi.step(torch.bernoulli(x_train[idx]))  # dynamic binarization
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0], epochs=100).parse_args(argv)
    x_train, x_test = load(args)
    d, k = x_train.shape[1], args.latent_dim
    rows = []
    for name in args.decoders.split(","):
        torch.manual_seed(args.seed)
        encoder = Encoder(d, k)
        decoder = make_decoder(name, k, x_train, args.hidden)
        vae = PyroVAE(encoder, decoder, k)
        seconds = train(vae, x_train, args)
        rows.append(measure(name, vae.encoder, vae.decoder, x_test, args, seconds))
    report(rows, args)


if __name__ == "__main__":
    main()
