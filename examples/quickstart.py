"""Train a LIDDecoder for a few steps on random binary data and print its loss.

Run: ``.venv/bin/python examples/quickstart.py``
"""

import time

import torch
import torch.nn.functional as F

import lidvae_ext
from lidvae_ext import LIDDecoder

torch.manual_seed(0)
latent_dim, data_dim = 16, 64
decoder = LIDDecoder(latent_dim, data_dim, hidden=128, strong_convexity=0.1)
optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)
z = torch.randn(256, latent_dim)
x = (torch.rand(256, data_dim) < 0.3).float()
start = time.perf_counter()
for step in range(1, 101):
    loss = F.binary_cross_entropy_with_logits(decoder(z), x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 20 == 0:
        print(f"step {step:3d}  BCE {loss.item():.4f}")
backend = "fused" if lidvae_ext.ops.fused_available("cpu") else "reference"
print(f"100 steps in {time.perf_counter() - start:.2f}s ({backend} kernels)")
