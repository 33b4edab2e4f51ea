"""Deployment: torch.export of a LIDDecoder, and an AOTInductor package with the fused ops inside."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lidvae_ext
from lidvae_ext import LIDDecoder, ops

pytestmark = pytest.mark.skipif(not ops.fused_available("cpu"), reason="lidvae_ext._C not built")



def _trained_decoder() -> LIDDecoder:
    torch.manual_seed(11)
    dec = LIDDecoder(4, 20, hidden=16, strong_convexity=0.5, backend="fused", beta="learned")
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    z, x = torch.randn(32, 4), torch.rand(32, 20)
    for _ in range(5):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(dec(z), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dec.eval()


def _export(dec):
    example = torch.randn(8, dec.latent_dim)
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(dec, (example,), dynamic_shapes={"z": {0: batch}})


def test_export_keeps_the_fused_operators_and_matches_eager():
    dec = _trained_decoder()
    program = _export(dec)
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.lidvae_ext.icnn_forward.default) == 2
    for batch in (1, 5, 33):
        z = torch.randn(batch, 4)
        torch.testing.assert_close(program.module()(z), dec(z), rtol=0, atol=0)


@pytest.mark.slow
def test_aoti_package_matches_eager_in_a_fresh_process(tmp_path):
    dec = _trained_decoder()
    package = torch._inductor.aoti_compile_and_package(
        _export(dec), package_path=str(tmp_path / "decoder.pt2"),
        inductor_configs={"aot_inductor.compile_wrapper_opt_level": "O0"},
    )
    z = torch.randn(7, 4)
    torch.save(z, tmp_path / "z.pt")
    script = textwrap.dedent(
        """
        import sys, torch
        package, inputs, outputs = sys.argv[1:]
        try:  # without the extension the package cannot resolve its operators
            torch._inductor.aoti_load_package(package)(torch.zeros(1, 4))
            print("NO-ERROR-WITHOUT-IMPORT")
        except RuntimeError as err:
            print("without import:", err)
        import lidvae_ext  # registers the lidvae_ext operators (and their kernels)
        model = torch._inductor.aoti_load_package(package)
        torch.save(model(torch.load(inputs, weights_only=True)), outputs)
        """
    )
    # the lidvae_ext under test (installed, or an in-place build), not an unbuilt source tree
    package_parent = Path(lidvae_ext.__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package_parent), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", script, package, str(tmp_path / "z.pt"),
                          str(tmp_path / "out.pt")], capture_output=True, text=True, env=env,
                         timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    # the first lidvae_ext operator of the graph (softplus_weights, then icnn_forward)
    assert "Could not find schema for lidvae_ext::" in run.stdout, run.stdout
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    torch.testing.assert_close(got, dec(z), rtol=1e-6, atol=1e-6)
