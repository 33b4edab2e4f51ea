"""VAE models: a shared Gaussian encoder, MLP (VAE) or Brenier-map (LIDVAE) decoders."""

from .encoder import GaussianMLPEncoder, mlp
from .mixture import GMVAE, LIDGMVAE, MixtureVAE
from .likelihoods import BernoulliLikelihood, GaussianLikelihood, Likelihood, build_likelihood
from .vae import (
    LIDVAE,
    VAE,
    LatentVariableModel,
    build_model,
    diag_gaussian_log_prob,
    gaussian_kl_per_dim,
    make_likelihood,
    standard_normal_log_prob,
)

__all__ = [
    "BernoulliLikelihood", "GMVAE", "GaussianLikelihood", "LIDGMVAE", "MixtureVAE", "GaussianMLPEncoder", "LIDVAE", "LatentVariableModel",
    "Likelihood", "VAE", "build_likelihood", "build_model", "diag_gaussian_log_prob",
    "gaussian_kl_per_dim", "make_likelihood", "mlp", "standard_normal_log_prob",
]
