"""The Gaussian-prior family's models: :class:`VAE` (MLP decoder) and :class:`LIDVAE` (Brenier-map decoder).

Both are :class:`lidvae_ext.core.model.LatentVariableModel` instances: an encoder
q(z|x), a standard-normal prior p(z) = N(0, I), a decoder z ↦ η and a likelihood
p(x|η). They differ only in the decoder: an MLP for :class:`VAE`, the injective
Brenier-map :class:`lidvae_ext.LIDDecoder` for :class:`LIDVAE`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ...core.encoder import GaussianMLPEncoder, mlp
from ...core.likelihoods import Likelihood
from ...core.model import LatentVariableModel, make_lid_decoder, make_likelihood


class VAE(LatentVariableModel):
    """Gaussian VAE with an MLP decoder (posterior collapse happens here).

    Parameters
    ----------
    data_dim, latent_dim : int
        D and K.
    encoder_hidden, decoder_hidden : sequence of int
        MLP widths.
    likelihood : {"bernoulli", "gaussian"} or Likelihood
    kl_weight : float
        β-VAE weight (1 = plain VAE).
    binarize, gaussian_std, learn_std
        Likelihood options when ``likelihood`` is a name.
    encoder : nn.Module, optional
        Custom encoder replacing the Gaussian MLP one.
    activation : str
        MLP nonlinearity.
    """

    def __init__(self, data_dim: int, latent_dim: int, encoder_hidden: Sequence[int] = (256, 256),
                 decoder_hidden: Sequence[int] = (256, 256), likelihood: str | Likelihood = "bernoulli",
                 kl_weight: float = 1.0, binarize: bool = False, gaussian_std: float = 0.1,
                 learn_std: bool = False, encoder: nn.Module | None = None, activation: str = "relu") -> None:
        lik = likelihood if isinstance(likelihood, Likelihood) else make_likelihood(
            likelihood, data_dim, binarize, gaussian_std, learn_std)
        enc = encoder if encoder is not None else GaussianMLPEncoder(data_dim, latent_dim, encoder_hidden, activation)
        super().__init__(enc, mlp(latent_dim, decoder_hidden, data_dim, activation), lik, latent_dim, kl_weight)
        self.config = {"model": "vae", "data_dim": data_dim, "latent_dim": latent_dim,
                       "encoder_hidden": list(encoder_hidden), "decoder_hidden": list(decoder_hidden),
                       "likelihood": lik.config(), "kl_weight": kl_weight, "activation": activation,
                       "custom_encoder": encoder is not None}


class LIDVAE(LatentVariableModel):
    """Latent-identifiable VAE: same encoder, injective Brenier-map decoder.

    Parameters
    ----------
    data_dim, latent_dim : int
        D and K (D ≥ K).
    encoder_hidden : sequence of int
        Encoder MLP widths.
    icnn_hidden, icnn_layers : int
        Width and depth L of both ICNNs of :class:`lidvae_ext.LIDDecoder`.
    strong_convexity : float, default 0.0
        α ≥ 0 for both ICNNs (α > 0: inverse-Lipschitz variant, Kinoshita et al. 2023).
    beta : {"fixed", "learned", "pca", "random"}
        β = [I; 0], a learned full-column-rank map, or a fixed orthonormal one
        (the training data's principal directions, ``beta_basis``, or a seeded
        random one); see :class:`lidvae_ext.LIDDecoder`.
    beta_basis : Tensor, optional
        The (D×K) basis of ``beta="pca"`` (:func:`lidvae_ext.nn.fit_beta`); when
        rebuilding from a checkpoint it comes with the state dict instead.
    backend : {"auto", "fused", "reference"}
        Brenier-map implementation.
    likelihood, kl_weight, binarize, gaussian_std, learn_std, encoder, activation
        As for :class:`VAE`.
    """

    def __init__(self, data_dim: int, latent_dim: int, encoder_hidden: Sequence[int] = (256, 256),
                 icnn_hidden: int = 128, icnn_layers: int = 2, strong_convexity: float = 0.0,
                 beta: str = "fixed", backend: str = "auto", likelihood: str | Likelihood = "bernoulli",
                 kl_weight: float = 1.0, binarize: bool = False, gaussian_std: float = 0.1,
                 learn_std: bool = False, encoder: nn.Module | None = None, activation: str = "relu",
                 beta_basis: Tensor | None = None) -> None:
        lik = likelihood if isinstance(likelihood, Likelihood) else make_likelihood(
            likelihood, data_dim, binarize, gaussian_std, learn_std)
        enc = encoder if encoder is not None else GaussianMLPEncoder(data_dim, latent_dim, encoder_hidden, activation)
        dec = make_lid_decoder(latent_dim, data_dim, icnn_hidden, icnn_layers, strong_convexity, beta, backend,
                               beta_basis)
        super().__init__(enc, dec, lik, latent_dim, kl_weight)
        self.config = {"model": "lidvae", "data_dim": data_dim, "latent_dim": latent_dim,
                       "encoder_hidden": list(encoder_hidden), "icnn_hidden": icnn_hidden,
                       "icnn_layers": icnn_layers, "strong_convexity": strong_convexity, "beta": beta,
                       "backend": backend, "likelihood": lik.config(), "kl_weight": kl_weight,
                       "activation": activation, "custom_encoder": encoder is not None}
