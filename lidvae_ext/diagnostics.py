"""Per-latent-dimension diagnostics that separate the two ways a latent can die.

For a model with an encoder q(z|x), prior N(0, I), decoder z ↦ η and a
likelihood p(x|η), on held-out data:

* **Decoder sensitivity** (is the model identifiable *in practice* along z_k?):
  ``s_k = E_x E_q ‖∂η/∂z_k‖²`` and the expected Fisher information of
  log p(x|z) along z_k, ``F_kk = E_x E_q Σ_d w_d(η) (∂η_d/∂z_k)²`` with
  ``w_d`` the likelihood's Fisher weight (Bernoulli logits: σ(η)(1 − σ(η));
  Gaussian mean: 1/σ_d²). The Jacobian columns (the a.e. derivative) come
  from one-sided finite differences in float64 on a copy of the model, robust
  to the jumps of a leaky-ReLU Brenier map (see :func:`decoder_jacobian`;
  backend-agnostic: the fused operator has no forward-mode AD).
* **Exact-posterior spread** (has the *exact* posterior collapsed, or only q?):
  self-normalized importance sampling with q(z|x) as proposal gives, per
  example, the exact posterior's mean m_k(x) and variance v_k(x) of z_k, and
  the effective sample size. Reported: ``E_x v_k`` (1 = the prior's spread),
  ``Var_x m_k`` (the exact posterior's "active-unit" variance, next to q's
  ``Var_x μ_k``) and q's own ``E_x σ²_k``. Mixture-prior models (which have
  ``log_prior``) are weighted with their own mixture prior; their proposal is
  the Gaussian with the moments of q(z|x) (``encode``), an exact density of
  what is sampled, so the weights stay correct.

For mixture-prior models the runs add the exact posterior of the cluster, p(y|x), next to
q(y|x) (``diagnose(..., extra=family.latent_diagnostics)``;
:mod:`lidvae_ext.families.mixture.diagnostics`).

A dimension with ``F_kk ≈ 0`` is not identifiable in practice (the decoder
ignores it; the exact posterior equals the prior there). A dimension with
``F_kk`` clearly > 0, ``E_x v_k`` < 1 and ``Var_x m_k`` > 0 but q's
``Var_x μ_k ≈ 0`` is collapsed only in q (an inference failure, not a model
one).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import Tensor

from .core.gaussian import diag_gaussian_log_prob, standard_normal_log_prob
from .core.likelihoods import BernoulliLikelihood, GaussianLikelihood


def _float64_copy(model: Any) -> Any:
    dup = copy.deepcopy(model).double()
    dup.eval()
    return dup


def fisher_weight(likelihood: Any, eta: Tensor) -> Tensor:
    """Per-coordinate Fisher weight of the likelihood w.r.t. its natural output η (same shape as η)."""
    if isinstance(likelihood, BernoulliLikelihood):
        p = torch.sigmoid(eta)
        return p * (1.0 - p)
    if isinstance(likelihood, GaussianLikelihood):
        return torch.exp(-2.0 * likelihood.log_std().to(eta.dtype)).expand_as(eta)
    raise ValueError(f"no Fisher weight for likelihood {type(likelihood).__name__}: "
                     "only Bernoulli and Gaussian are supported")


def decoder_jacobian(model: Any, z: Tensor, step: float = 1e-6) -> Tensor:
    """The almost-everywhere derivative ∂η/∂z by one-sided finite differences, shape (B, K, D), float64.

    The Brenier map of a leaky-ReLU ICNN is *discontinuous* where a hidden
    pre-activation (layer ≥ 1) crosses 0 (∇ψ contains σ'), so a central
    difference that straddles such a surface returns jump/2h instead of the
    derivative. Both one-sided differences (z ± h e_k) are formed and, per
    example and coordinate, the one with the smaller norm is kept: a jump
    within h on one side inflates that side by O(1/h), while both are
    O(h)-accurate where the map is smooth (a jump within h on *both* sides
    has probability O(h²)).

    ``model`` must already be in float64 (see :func:`decoder_sensitivity`);
    ``z`` is (B, K).
    """
    z = z.double()
    b, k = z.shape
    eye = torch.eye(k, dtype=z.dtype, device=z.device) * step
    center = model.decode(z)[:, None, :]  # (B, 1, D)
    plus = model.decode((z[:, None, :] + eye).reshape(b * k, k)).reshape(b, k, -1)
    minus = model.decode((z[:, None, :] - eye).reshape(b * k, k)).reshape(b, k, -1)
    fwd, bwd = (plus - center) / step, (center - minus) / step
    keep_fwd = (fwd.square().sum(-1) <= bwd.square().sum(-1))[..., None]
    return torch.where(keep_fwd, fwd, bwd)


@torch.no_grad()
def decoder_sensitivity(model: Any, x: Tensor, num_samples: int = 1, step: float = 1e-6, seed: int = 0,
                        batch_size: int = 128) -> dict[str, list[float]]:
    """Per-dimension decoder sensitivity and expected Fisher information (see the module docstring).

    Parameters
    ----------
    model : LatentVariableModel
    x : Tensor
        (N, D) held-out data, already prepared (binarized if the model's likelihood is).
    num_samples : int
        z ~ q(z|x) draws per example.
    step : float
        Finite-difference step (float64).
    seed : int
        Seed of the z draws.

    Returns
    -------
    dict
        ``sensitivity`` (K,) E‖∂η/∂z_k‖², ``fisher`` (K,) E F_kk.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    m = _float64_copy(model)
    device = next(m.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    sens, fish, count = None, None, 0
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device).double()
        mean, logvar = m.encode(xb)
        for _ in range(num_samples):
            eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype).to(device)
            z = mean + torch.exp(0.5 * logvar) * eps
            jac = decoder_jacobian(m, z, step)  # (B, K, D)
            w = fisher_weight(m.likelihood, m.decode(z))  # (B, D)
            s = jac.square().sum((0, 2))
            f = (jac.square() * w[:, None, :]).sum((0, 2))
            sens = s if sens is None else sens + s
            fish = f if fish is None else fish + f
            count += z.shape[0]
    return {"sensitivity": (sens / count).tolist(), "fisher": (fish / count).tolist()}


@torch.no_grad()
def posterior_spread(model: Any, x: Tensor, num_samples: int = 1000, seed: int = 0, batch_size: int = 64,
                     max_elements: int = 2 ** 22) -> dict[str, Any]:
    """Exact-posterior moments per latent dimension by self-normalized importance sampling.

    For each example, ``num_samples`` draws z_i ~ q(z|x) get weights
    w_i ∝ p(x|z_i) p(z_i) / q(z_i|x); m = Σ w_i z_i, v = Σ w_i (z_i − m)²,
    ESS = 1 / Σ w_i². Consistent as ``num_samples`` grows; trust it where the
    ESS is not tiny.

    Returns
    -------
    dict
        ``exact_var`` (K,) E_x v_k; ``exact_mean_var`` (K,) Var_x m_k, and
        ``exact_mean_noise`` (K,) E_x v_k/ESS, the Monte-Carlo noise that alone
        inflates Var_x m_k (compare the two before calling a dimension used);
        ``q_var`` (K,) E_x σ²_k; ``q_mean_var`` (K,) Var_x μ_k;
        ``ess_mean``, ``ess_min`` (floats), ``num_samples``.
    """
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    # the model's own prior (mixture models: log Σ_k N(z; μ_k, σ_k²)/C); the Gaussian-prior models' N(0, I)
    log_prior = getattr(model, "log_prior", standard_normal_log_prob)
    was = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(int(seed))
        means, vars_, mus, qvars, ess, noise = [], [], [], [], [], []
        for start in range(0, x.shape[0], batch_size):
            xb = x[start:start + batch_size].to(device)
            b, d = xb.shape
            mu, logvar = model.encode(xb)
            std = torch.exp(0.5 * logvar)
            chunk = max(1, max_elements // max(1, b * d))
            zs, lws = [], []
            for s0 in range(0, num_samples, chunk):
                s = min(chunk, num_samples - s0)
                eps = torch.randn((s, *mu.shape), generator=gen, dtype=mu.dtype).to(device)
                z = mu + std * eps  # (s, B, K)
                lw = model.log_likelihood(xb, z) + log_prior(z) - diag_gaussian_log_prob(z, mu, logvar)
                zs.append(z.double().cpu())
                lws.append(lw.double().cpu())
            z_all, lw_all = torch.cat(zs), torch.cat(lws)  # (S, B, K), (S, B)
            w = torch.softmax(lw_all, dim=0)[..., None]  # (S, B, 1)
            m = (w * z_all).sum(0)
            v = (w * (z_all - m).square()).sum(0)
            means.append(m)
            vars_.append(v)
            mus.append(mu.double().cpu())
            qvars.append(logvar.double().exp().cpu())
            ess.append(1.0 / w[..., 0].square().sum(0))
            noise.append(v / ess[-1][:, None])
    finally:
        model.train(was)
    m, v, mu, qv, e, nz = (torch.cat(t) for t in (means, vars_, mus, qvars, ess, noise))
    n = m.shape[0]
    return {
        "exact_var": v.mean(0).tolist(),
        "exact_mean_var": (m.var(0).tolist() if n > 1 else [math.nan] * m.shape[1]),
        "exact_mean_noise": nz.mean(0).tolist(),
        "q_var": qv.mean(0).tolist(),
        "q_mean_var": (mu.var(0).tolist() if n > 1 else [math.nan] * m.shape[1]),
        "ess_mean": float(e.mean()),
        "ess_min": float(e.min()),
        "num_samples": int(num_samples),
    }


def diagnose(model: Any, x: Tensor, *, num_examples: int = 500, sensitivity_samples: int = 1,
             posterior_samples: int = 1000, seed: int = 0, prepare_targets: bool = True,
             extra: Callable[[Any, Tensor, int, int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Both diagnostics on the first ``num_examples`` rows of held-out ``x`` (see the module docstring).

    With ``prepare_targets`` the rows are first binarized like the metrics'
    targets (``likelihood.fixed_targets(x, seed)``). ``extra(model, rows, posterior_samples,
    seed)``, when given, adds its entries computed on the same prepared rows (the runs pass
    their family's :meth:`~lidvae_ext.families.base.Family.latent_diagnostics`).
    """
    if num_examples < 2:
        raise ValueError(f"num_examples must be >= 2, got {num_examples}")
    x = x[:num_examples]
    lik = getattr(model, "likelihood", None)
    if prepare_targets and lik is not None and hasattr(lik, "fixed_targets"):
        x = lik.fixed_targets(x, seed)
    out: dict[str, Any] = {"num_examples": int(x.shape[0])}
    out.update(decoder_sensitivity(model, x, sensitivity_samples, seed=seed))
    out.update(posterior_spread(model, x, posterior_samples, seed=seed))
    if extra is not None:  # the family's other latents (a mixture prior: the cluster y), on the same rows
        out.update(extra(model, x, posterior_samples, seed))
    return out
