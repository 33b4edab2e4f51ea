"""Showing sentences: decoding without <unk>, and homotopies between two sentences' latents."""

from __future__ import annotations

import pytest
import torch

from lidvae_ext.families.sentence.models import LIDSVAE, SVAE
from lidvae_ext.data.text.vocab import UNK_ID

V = 12


def _svae(seed=0):
    torch.manual_seed(seed)
    return SVAE(V, latent_dim=2, embed_dim=3, hidden=4, dropout=0.0).double().eval()


def _sentences(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, V, (n, 6), generator=g)
    x[:, 0], x[:, -1] = 1, 2  # <s> ... </s>
    return x


def test_allow_unk_false_never_emits_unk():
    model = _svae()
    with torch.no_grad():
        model.output.bias[UNK_ID] = 50.0  # <unk> is the most probable token everywhere
    z = torch.randn(5, 2, dtype=torch.float64)
    with_unk = model.generate(z, max_len=6)
    assert bool((with_unk[:, 1:-1] == UNK_ID).all())
    without = model.generate(z, max_len=6, allow_unk=False)
    assert not bool((without == UNK_ID).any())
    # the second most probable token is what greedy decoding gives once <unk> is excluded
    with torch.no_grad():
        model.output.bias[UNK_ID] = -50.0
    torch.testing.assert_close(model.generate(z, max_len=6), without)
    assert not bool((model.sample(4, generator=torch.Generator().manual_seed(0), allow_unk=False) == UNK_ID).any())


@pytest.mark.parametrize("kind", ["svae", "lidsvae"])
def test_homotopy_endpoints_are_the_reconstructions(kind):
    torch.manual_seed(1)
    if kind == "svae":
        model = SVAE(V, latent_dim=2, embed_dim=3, hidden=4, dropout=0.0).double()
    else:
        model = LIDSVAE(V, latent_dim=2, embed_dim=3, hidden=4, dropout=0.0, icnn_hidden=5).double()
    x = _sentences()
    path = model.homotopy(x[:1], x[1:2], steps=5, max_len=8)
    assert path.shape[0] == 5
    rec = model.reconstruct(x[:2], max_len=8)
    w = min(path.shape[1], rec.shape[1])
    torch.testing.assert_close(path[0, :w], rec[0, :w])
    torch.testing.assert_close(path[-1, :w], rec[1, :w])
    with pytest.raises(ValueError, match="steps must be >= 2"):
        model.homotopy(x[:1], x[1:2], steps=1)


def test_homotopy_of_a_decoder_that_ignores_z_is_constant():
    model = _svae()
    with torch.no_grad():  # a collapsed decoder: z reaches neither the initial state nor the inputs
        model.init_state.weight.zero_()
        model.decoder_rnn.weight_ih_l0[:, 3:].zero_()
    path = model.homotopy(_sentences()[:1], _sentences(seed=1)[:1], steps=6, max_len=8)
    assert bool((path == path[:1]).all())


def test_homotopy_ends_prefer_known_words():
    from lidvae_ext.families.sentence.display import homotopy_ends

    x = torch.tensor([[1, 3, 3, 2, 0], [1, 5, 2, 0, 0], [1, 5, 6, 7, 2], [1, 5, 3, 6, 2], [1, 8, 9, 10, 2]])
    torch.testing.assert_close(homotopy_ends(x), x[[2, 4]])  # three known words each, no <unk>
    torch.testing.assert_close(homotopy_ends(x, pool=2), x[[1, 0]])
