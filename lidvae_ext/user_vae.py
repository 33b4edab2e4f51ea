"""The project's collapse metrics and diagnostics for a VAE the user wrote.

:func:`lidvae_ext.families.gaussian.metrics.evaluate` and :func:`lidvae_ext.diagnostics.diagnose`
take the project's model classes. A user who dropped a :class:`~lidvae_ext.LIDDecoder`
into their own VAE (plain PyTorch, Pyro, pythae, Lightning) has instead an
encoder and a decoder; :func:`evaluate_vae` and :func:`diagnose_vae` take
exactly those, plus the likelihood by name, and run the same code the CLI
runs::

    from lidvae_ext import evaluate_vae
    m = evaluate_vae(vae.encoder, vae.decoder, x_test, likelihood="bernoulli", binarize=True)
    print(m["active_units_at"], m["iwae_nll"])

Contract: ``encoder(x) -> (mean, logvar)`` of the diagonal-Gaussian q(z|x),
each (B, K), for rows x (B, D); ``decoder(z) -> η`` (B, D), the likelihood's
parameter: Bernoulli *logits* or Gaussian *means*; the prior is N(0, I). If
your encoder returns a standard deviation, pass
``lambda x: (mu(x), 2 * sigma(x).log())``; if your decoder ends in a sigmoid,
pass the module before it (logits are what the Bernoulli likelihood takes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .diagnostics import diagnose
from .core.metrics import active_units_at
from .core.model import LatentVariableModel, make_likelihood
from .families.gaussian.metrics import evaluate

DEFAULT_THRESHOLDS = (0.01, 0.1)


class _CallableModule(nn.Module):
    """An nn.Module around a plain callable (its parameters stay the caller's)."""

    def __init__(self, fn: Callable[[Tensor], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Any:
        return self.fn(x)


def _as_module(name: str, part: Any) -> nn.Module:
    if isinstance(part, nn.Module):
        return part
    if not callable(part):
        raise TypeError(f"{name} must be an nn.Module or a callable, got {type(part).__name__}")
    return _CallableModule(part)


def wrap_vae(encoder: Callable[[Tensor], tuple[Tensor, Tensor]], decoder: Callable[[Tensor], Tensor],
             data_dim: int, latent_dim: int, likelihood: str = "bernoulli", *, binarize: bool = False,
             gaussian_std: float = 0.1) -> LatentVariableModel:
    """A :class:`~lidvae_ext.core.model.LatentVariableModel` view of a user's encoder and decoder.

    Parameters
    ----------
    encoder : callable
        ``x (B, D) -> (mean, logvar)``, each (B, K).
    decoder : callable
        ``z (B, K) -> η (B, D)``: Bernoulli logits or Gaussian means.
    data_dim, latent_dim : int
        D and K.
    likelihood : {"bernoulli", "gaussian"}
        The observation model on η.
    binarize : bool, default False
        Bernoulli only: the data are [0, 1] intensities binarized by sampling
        (dynamic binarization in training); metrics binarize the held-out set
        once, with their seed.
    gaussian_std : float, default 0.1
        Gaussian only: the fixed observation standard deviation.

    Returns
    -------
    LatentVariableModel
        Shares the user's modules (no copy); nothing is trained or changed.
    """
    lik = make_likelihood(likelihood, data_dim, binarize=binarize, std=gaussian_std)
    return LatentVariableModel(_as_module("encoder", encoder), _as_module("decoder", decoder), lik, latent_dim)


def _check_data(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[0] < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a (N >= 2, D) tensor of held-out rows, got {shape} "
                         "(flatten images first, e.g. x.flatten(1))")


@torch.no_grad()
def _latent_dim(encoder: nn.Module, x: Tensor) -> int:
    out = encoder(x[:2])
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, Tensor) for t in out)
            and out[0].shape == out[1].shape and out[0].dim() == 2):
        raise ValueError("encoder(x) must return (mean, logvar), two (B, K) tensors of the same shape")
    return int(out[0].shape[1])


def evaluate_vae(encoder: Callable[[Tensor], tuple[Tensor, Tensor]], decoder: Callable[[Tensor], Tensor],
                 x: Tensor, likelihood: str = "bernoulli", *, binarize: bool = False, gaussian_std: float = 0.1,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS, iwae_samples: int = 100,
                 mi_samples: int = 1, batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Collapse metrics of a user's VAE on held-out rows ``x`` (N, D), as the CLI computes them.

    Parameters
    ----------
    encoder, decoder, likelihood, binarize, gaussian_std
        See :func:`wrap_vae`.
    x : Tensor
        (N, D) held-out data, on the device of the modules.
    thresholds : sequence of float, default (0.01, 0.1)
        Active-unit thresholds on Var_x(E_q[z_d|x]); the first is ``active_units``.
    iwae_samples, mi_samples, batch_size, seed
        As for :func:`lidvae_ext.families.gaussian.metrics.evaluate` (every draw is seeded).

    Returns
    -------
    dict
        :func:`lidvae_ext.families.gaussian.metrics.evaluate`'s keys (``active_units``, ``au_variance``,
        ``kl``, ``kl_per_dim``, ``mutual_info``, ``neg_elbo``, ``iwae_nll``, ...) plus
        ``active_units_at`` {``"%g" % t``: count} for every threshold.
    """
    _check_data(x)
    if not thresholds:
        raise ValueError("thresholds must name at least one active-unit threshold")
    enc, dec = _as_module("encoder", encoder), _as_module("decoder", decoder)
    model = wrap_vae(enc, dec, x.shape[1], _latent_dim(enc, x), likelihood, binarize=binarize,
                     gaussian_std=gaussian_std)
    out = evaluate(model, x, au_threshold=float(thresholds[0]), iwae_samples=iwae_samples, mi_samples=mi_samples,
                   batch_size=batch_size, seed=seed)
    out["active_units_at"] = active_units_at(out["au_variance"], tuple(thresholds))
    return out


def diagnose_vae(encoder: nn.Module, decoder: nn.Module, x: Tensor, likelihood: str = "bernoulli", *,
                 binarize: bool = False, gaussian_std: float = 0.1, num_examples: int = 500,
                 posterior_samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per-dimension diagnostics of a user's VAE (:func:`lidvae_ext.diagnostics.diagnose`).

    ``sensitivity``/``fisher`` say whether the decoder can see each z_k;
    ``exact_var``/``exact_mean_var`` (self-normalized importance sampling) say
    whether the exact posterior uses it while q(z|x) does not. The decoder's
    Jacobian is taken by finite differences on a float64 *copy*, so encoder and
    decoder must be ``nn.Module`` instances (a module holding your callable's
    parameters), not bare functions.
    """
    _check_data(x)
    for name, part in (("encoder", encoder), ("decoder", decoder)):
        if not isinstance(part, nn.Module):
            raise TypeError(f"diagnose_vae needs {name} as an nn.Module (it runs a float64 copy), got "
                            f"{type(part).__name__}; wrap the callable in a module that owns its parameters")
    model = wrap_vae(encoder, decoder, x.shape[1], _latent_dim(encoder, x), likelihood, binarize=binarize,
                     gaussian_std=gaussian_std)
    return diagnose(model, x, num_examples=num_examples, posterior_samples=posterior_samples, seed=seed)
