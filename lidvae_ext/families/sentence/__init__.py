"""The sentence family: SVAE vs LIDSVAE, LSTM decoders on token sequences (p(z) = N(0, I)).

:class:`~.models.SVAE` feeds z to an LSTM decoder; :class:`~.models.LIDSVAE` adds
the Brenier-map token decoder. Metrics (perplexity, latent R²) in :mod:`.metrics`,
decoded sentences in :mod:`.display`, options and defaults in :mod:`.options`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ...core.spec import ModelSpec, SpecGrammar
from ...data.text.vocab import UNK_ID
from ..base import Column, Family
from .display import decoded_examples, token_rate
from .metrics import evaluate_text
from .models import LIDSVAE, SVAE, SentenceVAE, build_sequence_model
from .options import TEXT_BETA, TEXT_STRONG_CONVEXITY, TextModelOptions

SHOWN_SENTENCES = 5  # test sentences reconstructed in samples.txt (and scored for unk_rate_greedy)


def build_sentence(spec: ModelSpec, vocab_size: int, opts: TextModelOptions) -> SentenceVAE:
    """The SVAE or LIDSVAE ``spec`` names, with the run's options (β = "pca" is fitted afterwards, by
    :meth:`LIDSVAE.fit_beta` on the training sentences)."""
    common = dict(vocab_size=vocab_size, latent_dim=opts.latent_dim, embed_dim=opts.embed_dim, hidden=opts.hidden,
                  dropout=opts.dropout, kl_weight=spec.kl_weight)
    if spec.model == "svae":
        return SVAE(**common)
    alpha = opts.strong_convexity if spec.strong_convexity is None else spec.strong_convexity
    return LIDSVAE(icnn_hidden=opts.icnn_hidden, icnn_layers=opts.icnn_layers, strong_convexity=alpha,
                   beta=spec.beta or opts.beta, backend=opts.backend, **common)


def _max_len(ds: Any) -> int:
    return int(ds.info.get("max_len", ds.test.shape[1] - 2))


class SentenceFamily(Family):
    """SVAE / LIDSVAE / β-SVAE on sentences."""

    def build(self, spec: ModelSpec, ds: Any, options: TextModelOptions, fit_x: Any) -> nn.Module:
        """See :meth:`lidvae_ext.families.base.Family.build`."""
        model = build_sentence(spec, len(ds.vocab), options)
        if isinstance(model, LIDSVAE):
            model.fit_beta(fit_x)  # β = "pca": principal directions of the training tokens (else a no-op)
        return model

    def rebuild(self, config: dict[str, Any], backend: str | None = None) -> nn.Module:
        """See :meth:`lidvae_ext.families.base.Family.rebuild`."""
        return build_sequence_model(config, backend=backend)

    def evaluate(self, model: nn.Module, ds: Any, eval_opts: Any) -> dict[str, Any]:
        """See :meth:`lidvae_ext.families.base.Family.evaluate`."""
        m = evaluate_text(model, ds.test, au_threshold=eval_opts.au_threshold, iwae_samples=eval_opts.iwae_samples,
                          batch_size=eval_opts.batch_size, seed=eval_opts.seed, latents=ds.test_latents,
                          fit_x=ds.train if ds.train_latents is not None else None, fit_latents=ds.train_latents)
        # how much of the unrestricted greedy reconstructions is <unk> (samples.txt shows them decoded)
        raw = model.reconstruct(ds.test[:SHOWN_SENTENCES], max_len=_max_len(ds))
        m["unk_rate_greedy"] = token_rate(raw, UNK_ID)
        return m

    def log_line(self, name: str, m: dict[str, Any]) -> str:
        """The shared line plus perplexity and (synthetic data) the latent R²."""
        return (f"[{name}] AU {m['active_units']}/{m['latent_dim']}, KL {m['kl']:.2f}, MI {m['mutual_info']:.2f}, "
                f"IWAE NLL {m['iwae_nll']:.2f}, PPL {m['ppl']:.1f}"
                + (f", latent R² {m['latent_r2']:.3f}" if "latent_r2" in m else "")
                + f" (train {m['seconds']:.1f}s, eval {m['eval_seconds']:.1f}s)")

    def table_columns(self) -> list[Column]:
        """Perplexity and the latent R² (synthetic data)."""
        return [("PPL", lambda m: f"{m['ppl']:.1f}" if "ppl" in m else "–"),
                ("latent R²", lambda m: f"{m['latent_r2']:.3f}" if "latent_r2" in m else "–")]

    def sections(self, models: dict[str, nn.Module], ds: Any, results: dict[str, dict[str, Any]], out: Path,
                 seed: int) -> list[tuple[str, list[str]]]:
        """Writes ``samples.txt`` (reconstructions and samples of every model, decoded without ``<unk>``);
        returns the notes and each model's homotopy."""
        unk_rate = token_rate(ds.test, UNK_ID)
        texts = [f"<unk> is {unk_rate:.1%} of the test split's words. The sentences below are decoded with <unk> "
                 "excluded (the most probable known word instead); each model's 'raw greedy' line says how much of "
                 "its unrestricted greedy reconstructions is <unk>.", ""]
        homotopies = []
        for name, model in models.items():
            shown = decoded_examples(model, ds, ds.test[:SHOWN_SENTENCES], seed, _max_len(ds))
            texts += [f"## {name}", f"raw greedy reconstructions: {shown['unk_rate_greedy']:.1%} <unk>",
                      *shown["lines"], ""]
            homotopies.append((f"Homotopies: {name}", shown["homotopy"]))
        (out / "samples.txt").write_text("\n".join(texts) + "\n")
        first = next(iter(results.values()))
        note = (f"Test split of {ds.test.shape[0]} sentences; IWAE with k = {first['iwae_samples']}; perplexity "
                f"exp(Σ NLL / Σ tokens) with </s> counted; AU threshold {first['au_threshold']}; <unk> is "
                f"{unk_rate:.1%} of the test words" + (
                    "; latent R²: linear regression from posterior means (fitted on the training split) to the "
                    "generating latents." if ds.test_latents is not None else "."))
        return [("Notes", [note, "Reconstructions and samples of every model: samples.txt."]), *homotopies]


FAMILY = SentenceFamily(
    name="sentence",
    grammar=SpecGrammar(bases=("svae", "lidsvae"), beta_bases=("svae",), lid_bases=("lidsvae",)),
    data_kind="text",
    default_models="svae,lidsvae",
    cli_defaults={"epochs": 8, "batch_size": 64, "grad_clip": 5.0, "eval_batch_size": 64, "diagnostics": 0},
    supports_diagnostics=False,
)

__all__ = ["FAMILY", "LIDSVAE", "SVAE", "SentenceFamily", "SentenceVAE", "TEXT_BETA", "TEXT_STRONG_CONVEXITY",
           "TextModelOptions", "build_sentence", "evaluate_text"]
