"""How tests/data/legacy_checkpoints/*.pt were made (kept for provenance; not run by the tests).

Run with lidvae_ext 0.1.0 as it was before issue 15 (checkpoints then were read with
torch.load(weights_only=False)), from outside the source tree so the installed copy
is imported: ``python make_legacy.py OUT``; then copy OUT/<spec>/checkpoint.pt to
<spec>.pt and OUT/<spec>/outputs.pt to <spec>.outputs.pt.
"""
import dataclasses
import sys
import warnings

import torch

warnings.filterwarnings("ignore")
import lidvae_ext
from lidvae_ext.core.options import ModelOptions
from lidvae_ext.families import build_from_spec, parse_spec
from lidvae_ext.training.config import TrainConfig
from lidvae_ext.training.loop import train

assert "site-packages" in lidvae_ext.__file__
out = sys.argv[1]
g = torch.Generator().manual_seed(0)
x = (torch.rand(64, 3, generator=g) @ torch.rand(3, 10, generator=g) / 3).clamp(0, 1)
for spec, opts in [("vae", ModelOptions(latent_dim=2, encoder_hidden=(8,), decoder_hidden=(8,), binarize=True)),
                   ("lidvae-learned", ModelOptions(latent_dim=2, encoder_hidden=(8,), icnn_hidden=4, likelihood="gaussian", learn_std=True))]:
    torch.manual_seed(0)
    model = build_from_spec(parse_spec(spec), 10, opts)
    extra = {"data": {"name": "legacy.npy", "data_dir": None, "train_size": None, "test_size": None, "seed": 0},
             "spec": spec, "model_options": dataclasses.asdict(opts)}
    train(model, x, TrainConfig(epochs=2, batch_size=32, progress=False), f"{out}/{spec}", extra_state=extra)
    model.eval()
    torch.manual_seed(1)
    z = torch.randn(4, 2)
    torch.save({"z": z, "decoded": model.decode(z).detach(), "mean": model.encode(x[:4])[0].detach()}, f"{out}/{spec}/outputs.pt")
