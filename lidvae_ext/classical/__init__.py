"""Exact-inference posterior collapse in classical models.

Wang, Blei & Cunningham (NeurIPS 2021): the exact posterior collapses,
``p(z | x) = p(z)``, iff the latent is non-identifiable, i.e. ``p(x | z)``
does not depend on ``z``. This subpackage makes the statement runnable:

* :mod:`.ppca` -- probabilistic PCA with closed-form ML fit and posterior;
* :mod:`.mixture` -- a two-component Gaussian mixture whose weight is the latent;
* :mod:`.diagnostic` -- ``Var_{z~prior} log p(x|z)`` next to ``KL(post || prior)``;
* :mod:`.demos` -- the numbers behind ``lidvae-ext demo ppca|gmm``.

Only NumPy is needed here; plotting lives in :mod:`.plots` (matplotlib).
"""

from __future__ import annotations

from .diagnostic import (
    DiagnosticResult,
    directional_loglik_variance,
    gmm_diagnostic,
    identifiability_diagnostic,
    ppca_diagnostic,
    ppca_direction_diagnostic,
)
from .mixture import (
    DEFAULT_CASES,
    GridPosterior,
    MixtureCase,
    grid_posterior,
    log_beta_pdf,
    mixture_log_lik,
    sample_mixture,
)
from .ppca import (
    PPCA,
    direction_report,
    fit_ppca,
    fit_ppca_from_moments,
    gaussian_kl_to_standard_normal,
    loglik_variance_exact,
    mutual_information,
    noise_sweep,
    principal_basis,
)

__all__ = [
    "DEFAULT_CASES",
    "DiagnosticResult",
    "GridPosterior",
    "MixtureCase",
    "PPCA",
    "direction_report",
    "directional_loglik_variance",
    "fit_ppca",
    "fit_ppca_from_moments",
    "gaussian_kl_to_standard_normal",
    "gmm_diagnostic",
    "grid_posterior",
    "identifiability_diagnostic",
    "log_beta_pdf",
    "loglik_variance_exact",
    "mixture_log_lik",
    "mutual_information",
    "noise_sweep",
    "ppca_diagnostic",
    "ppca_direction_diagnostic",
    "principal_basis",
    "sample_mixture",
]
