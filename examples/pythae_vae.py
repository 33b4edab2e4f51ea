"""Drop-in, pythae: its ``VAE`` with an MLP or a LIDDecoder as the ``BaseDecoder``, trained by its ``TrainingPipeline``.

Run: ``python examples/pythae_vae.py`` (needs ``pip install .[examples]`` for ``pythae``).
pythae's Bernoulli loss (``reconstruction_loss="bce"``) takes probabilities, so the
decoder returns ``sigmoid(logits)``; the metrics take the logits (``decoder.net``).
pythae trains on fixed data, so the training rows are binarized once (seeded).
"""

import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from pythae.models import VAE, VAEConfig
from pythae.models.base.base_utils import ModelOutput
from pythae.models.nn import BaseDecoder, BaseEncoder
from pythae.pipelines import TrainingPipeline
from pythae.trainers import BaseTrainerConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Encoder, load, make_decoder, measure, parser, report  # noqa: E402


class PythaeEncoder(BaseEncoder):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net  # x -> (mean, logvar)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        mean, logvar = self.net(x)
        return ModelOutput(embedding=mean, log_covariance=logvar)


class PythaeDecoder(BaseDecoder):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net  # z -> logits (an MLP or a LIDDecoder)

    def forward(self, z: torch.Tensor) -> ModelOutput:
        return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))


def train(model: VAE, x_train: torch.Tensor, args, out_dir: str) -> float:
    config = BaseTrainerConfig(output_dir=out_dir, num_epochs=args.epochs, learning_rate=args.lr,
                               per_device_train_batch_size=args.batch_size,
                               per_device_eval_batch_size=args.batch_size, optimizer_cls="Adam",
                               steps_saving=None, seed=args.seed, no_cuda=True)
    start = time.perf_counter()
    TrainingPipeline(training_config=config, model=model)(train_data=x_train)
    return time.perf_counter() - start


def main(argv=None) -> None:
    for name in list(logging.root.manager.loggerDict):  # pythae logs every epoch at INFO
        if name.startswith("pythae"):
            logging.getLogger(name).setLevel(logging.WARNING)
    args = parser(__doc__.splitlines()[0], epochs=100).parse_args(argv)
    x_train, x_test = load(args)
    x_train = torch.bernoulli(x_train, generator=torch.Generator().manual_seed(args.seed + 1))
    d, k = x_train.shape[1], args.latent_dim
    rows = []
    with tempfile.TemporaryDirectory() as out_dir:
        for name in args.decoders.split(","):
            torch.manual_seed(args.seed)
            encoder = PythaeEncoder(Encoder(d, k))
            net = make_decoder(name, k, x_train, args.hidden)
            model = VAE(VAEConfig(input_dim=(d,), latent_dim=k, reconstruction_loss="bce"),
                        encoder=encoder, decoder=PythaeDecoder(net))
            seconds = train(model, x_train, args, out_dir)
            rows.append(measure(name, encoder.net, model.decoder.net, x_test, args, seconds))
    report(rows, args)


if __name__ == "__main__":
    main()
