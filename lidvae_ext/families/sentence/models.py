"""Sentence VAEs: the LSTM baseline (SVAE) and the latent-identifiable LIDSVAE.

Both encode a sentence with embedding → 1-layer LSTM → last hidden state →
(μ, log σ²) and decode it autoregressively with a 1-layer LSTM; they differ in
how z reaches the token distribution:

* :class:`SVAE` (Bowman et al. 2016; He et al. 2019): z is concatenated to
  every input embedding and sets (h_0, c_0) = (tanh(W_h z), W_c z); logits are
  a linear map of the LSTM output.
* :class:`LIDSVAE` (Wang, Blei & Cunningham 2021): the LSTM reads embeddings
  only (zero initial state); its output o_t, after dropout, is joined with z,
  u_t = [o_t; z], and the logits are ``LIDDecoder(H + K, V)(u_t)`` =
  ∇ψ₂(β∇ψ₁(u_t)), an injective map of u_t (hence of z for fixed o_t), applied
  to all valid tokens of a batch in one operator call.

Sentences are padded id tensors ``<s> w… </s> <pad>…`` (:mod:`lidvae_ext.data.text`).
The reconstruction term is the token cross-entropy summed over ``w_1 … </s>``
(``<s>`` is never predicted); padded positions are never decoded, so they
contribute nothing to the loss or the gradients. Softmax is invariant to
adding one constant to all logits, so the Brenier map is identifiable only up
to that shift as a *categorical* model (the latent stays identifiable).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ...core.gaussian import elbo_batch_outputs, gaussian_elbo_terms
from ...data.text.vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from ...nn import LIDDecoder

SEQUENCE_MODELS = ("svae", "lidsvae")


class TokenTargets:
    """The categorical 'likelihood' hooks :func:`lidvae_ext.training.train` expects (no-ops for tokens)."""

    name = "categorical"

    def prepare(self, x: Tensor) -> Tensor:
        """Token ids are used as they are (no binarization)."""
        return x

    def fixed_targets(self, x: Tensor, seed: int = 0) -> Tensor:
        """Token ids are used as they are (no binarization)."""
        return x

    def config(self) -> dict[str, Any]:
        """``{'kind': 'categorical'}``: a softmax over the vocabulary."""
        return {"kind": "categorical"}


def trim_padding(x: Tensor) -> Tensor:
    """Drop the all-padding columns at the right of a (B, T) id batch."""
    if x.dim() != 2 or x.dtype != torch.long:
        raise ValueError(f"token batch must be a (B, T) int64 tensor, got {tuple(x.shape)} {x.dtype}")
    width = int((x != PAD_ID).sum(1).max()) if x.numel() else 0
    if width < 3:
        raise ValueError(f"token batch needs rows '<s> w… </s>' of at least 3 ids, longest row has {width}")
    return x[:, :width]


class SentenceVAE(nn.Module):
    """Shared encoder, objective, metrics hooks and decoding of :class:`SVAE` and :class:`LIDSVAE`.

    Parameters
    ----------
    vocab_size : int
        V, the vocabulary size including the specials.
    latent_dim : int
        K.
    embed_dim, hidden : int
        Word-embedding size and LSTM width (encoder and decoder).
    dropout : float
        Dropout on the decoder LSTM output o_t.
    kl_weight : float
        β of ``rec + β·KL`` in the training loss (metrics use 1).
    """

    kind = "base"

    def __init__(self, vocab_size: int, latent_dim: int, embed_dim: int = 64, hidden: int = 128,
                 dropout: float = 0.2, kl_weight: float = 1.0) -> None:
        super().__init__()
        for name, v in (("vocab_size", vocab_size), ("latent_dim", latent_dim), ("embed_dim", embed_dim),
                        ("hidden", hidden)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if vocab_size < 5:
            raise ValueError(f"vocab_size must be at least 5 (4 specials and a word), got {vocab_size}")
        if not 0.0 <= dropout < 1.0 or kl_weight < 0:
            raise ValueError(f"need 0 <= dropout < 1 and kl_weight >= 0, got {dropout}, {kl_weight}")
        self.vocab_size, self.latent_dim, self.embed_dim, self.hidden = vocab_size, latent_dim, embed_dim, hidden
        self.kl_weight = float(kl_weight)
        self.likelihood = TokenTargets()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.encoder_rnn = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.to_posterior = nn.Linear(hidden, 2 * latent_dim)
        self.dropout = nn.Dropout(dropout)
        self.config: dict[str, Any] = {"model": self.kind, "vocab_size": vocab_size, "latent_dim": latent_dim,
                                       "embed_dim": embed_dim, "hidden": hidden, "dropout": dropout,
                                       "kl_weight": kl_weight}

    # -- decoder pieces (subclasses) ---------------------------------------------------------
    def _decoder_input(self, emb: Tensor, z: Tensor) -> Tensor:
        raise NotImplementedError

    def _initial_state(self, z: Tensor) -> tuple[Tensor, Tensor] | None:
        raise NotImplementedError

    def _logits(self, o: Tensor, z: Tensor) -> Tensor:
        """(M, V) logits from decoder outputs o (M, H) and latents z (M, K)."""
        raise NotImplementedError

    decoder_rnn: nn.LSTM

    # -- encoder ------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logvar)`` (B, K) of q(z|x) from the encoder's state after ``</s>``."""
        x = trim_padding(x)
        words = x[:, 1:]  # w_1 … w_n </s> <pad>…
        out, _ = self.encoder_rnn(self.embedding(words))
        last = (words != PAD_ID).sum(1) - 1  # index of </s>; the LSTM is causal, padding never reaches it
        h = out[torch.arange(x.shape[0], device=x.device), last]
        mean, logvar = self.to_posterior(h).chunk(2, dim=-1)
        return mean, logvar

    # -- likelihood -----------------------------------------------------------------------------
    def draw_noise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """The standard-normal ``eps`` that :meth:`loss_terms` takes for batch ``x``, drawn from ``generator``
        (on the CPU, then moved: the draws do not depend on the device)."""
        mean, _ = self.encode(x)
        return torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)

    def token_log_probs(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """log p(w_t | w_<t, z) of every predicted token, and the mask of real tokens.

        Parameters
        ----------
        x : Tensor
            (B, T) padded ids.
        z : Tensor
            (B, K) latents.

        Returns
        -------
        logp : Tensor
            (B, T-1) log-probabilities of ``x[:, 1:]``, 0 at padded positions.
        mask : Tensor
            (B, T-1) bool, True for w_1 … ``</s>``.
        """
        x = trim_padding(x)
        if z.shape != (x.shape[0], self.latent_dim):
            raise ValueError(f"z must have shape ({x.shape[0]}, {self.latent_dim}), got {tuple(z.shape)}")
        inp, tgt = x[:, :-1], x[:, 1:]
        mask = tgt != PAD_ID
        steps = inp.shape[1]
        rnn_in = self._decoder_input(self.embedding(inp), z.unsqueeze(1).expand(-1, steps, -1))
        o, _ = self.decoder_rnn(rnn_in, self._initial_state(z))
        rows = mask.nonzero(as_tuple=True)
        tok_logp = self._target_log_probs(self.dropout(o[rows]), z[rows[0]], tgt[rows])  # real tokens, one call
        logp = torch.zeros(mask.shape, dtype=tok_logp.dtype, device=x.device)
        logp = logp.index_put(rows, tok_logp)
        return logp, mask

    def _target_log_probs(self, o: Tensor, z: Tensor, targets: Tensor) -> Tensor:
        """log softmax(logits)[target] for M tokens: o (M, H), z (M, K), targets (M,)."""
        return self._logits(o, z).log_softmax(-1).gather(1, targets.unsqueeze(1)).squeeze(1)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) per sentence; ``z`` is (B, K) or (S, B, K) → (B,) or (S, B)."""
        x = trim_padding(x)
        if z.dim() == 2:
            return self.token_log_probs(x, z)[0].sum(1)
        s, b = z.shape[0], z.shape[1]
        rep = x.unsqueeze(0).expand(s, -1, -1).reshape(s * b, -1)
        return self.token_log_probs(rep, z.reshape(s * b, -1))[0].sum(1).reshape(s, b)

    # -- objective --------------------------------------------------------------------------------
    def loss_terms(self, x: Tensor, eps: Tensor | None = None) -> dict[str, Tensor]:
        """Per-sentence ``rec`` = −log p(x|z) (one reparameterized z), ``kl``, ``kl_per_dim``, ``loss``."""
        return gaussian_elbo_terms(self, x, eps)

    def forward(self, x: Tensor, eps: Tensor | None = None, normalizer: float | None = None) -> dict[str, Tensor]:
        """Scalar loss ``Σ_batch (rec + β·KL) / normalizer`` (default: the batch size) and detached means."""
        terms = self.loss_terms(x, eps)
        return {**elbo_batch_outputs(terms, x.shape[0], normalizer), "mean": terms["mean"].detach()}

    # -- decoding ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: Tensor, max_len: int = 20, greedy: bool = True, temperature: float = 1.0,
                 generator: torch.Generator | None = None, allow_unk: bool = True) -> Tensor:
        """Decode sentences from latents z (B, K), greedily or by sampling.

        Returns (B, ≤ max_len + 2) ids ``<s> w… </s> <pad>…``; a sentence that
        reaches ``max_len`` words is closed with ``</s>``. ``</s>`` is never
        emitted as the first word (so every row holds at least one word).
        ``allow_unk=False`` never emits ``<unk>`` (the most probable *known* word
        instead): for showing sentences of a corpus where rare words, mapped to
        ``<unk>``, are frequent enough that greedy decoding would print little else.
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if max_len < 1 or temperature <= 0:
            raise ValueError(f"need max_len >= 1 and temperature > 0, got {max_len}, {temperature}")
        was = self.training
        self.eval()
        try:
            b, dev = z.shape[0], z.device
            out = torch.full((b, max_len + 2), PAD_ID, dtype=torch.long, device=dev)
            out[:, 0] = BOS_ID
            prev, state = out[:, 0], self._initial_state(z)
            done = torch.zeros(b, dtype=torch.bool, device=dev)
            for t in range(max_len):
                o, state = self.decoder_rnn(self._decoder_input(self.embedding(prev).unsqueeze(1), z.unsqueeze(1)),
                                            state)
                logits = self._logits(o[:, 0], z).float()
                logits[:, [PAD_ID, BOS_ID]] = float("-inf")
                if not allow_unk:
                    logits[:, UNK_ID] = float("-inf")
                if t == 0:
                    logits[:, EOS_ID] = float("-inf")
                if greedy:
                    tok = logits.argmax(1)
                else:
                    probs = torch.softmax(logits / temperature, 1)
                    tok = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(dev)
                tok = torch.where(done, torch.full_like(tok, PAD_ID), tok)
                out[:, t + 1] = tok
                done |= tok == EOS_ID
                prev = tok
                if bool(done.all()):
                    break
            out[~done, max_len + 1] = EOS_ID
            return trim_padding(out)
        finally:
            self.train(was)

    @torch.no_grad()
    def posterior_mean(self, x: Tensor) -> Tensor:
        """E_q[z|x] (B, K), in eval mode."""
        was = self.training
        self.eval()
        try:
            mean, _ = self.encode(x)
        finally:
            self.train(was)
        return mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor, max_len: int = 20, allow_unk: bool = True) -> Tensor:
        """Greedy decoding from the posterior mean E_q[z|x]."""
        return self.generate(self.posterior_mean(x), max_len=max_len, greedy=True, allow_unk=allow_unk)

    @torch.no_grad()
    def homotopy(self, x_from: Tensor, x_to: Tensor, steps: int = 7, max_len: int = 20,
                 allow_unk: bool = True) -> Tensor:
        """Greedy sentences along the line between two sentences' posterior means (Bowman et al. 2016).

        ``x_from``, ``x_to``: (1, T) id rows. Returns ``steps`` decoded rows for
        z_t = (1 − t)·E_q[z|x_from] + t·E_q[z|x_to], t = 0 … 1. A collapsed model
        decodes the same sentence all along the line.
        """
        if steps < 2:
            raise ValueError(f"steps must be >= 2, got {steps}")
        z0, z1 = self.posterior_mean(x_from)[:1], self.posterior_mean(x_to)[:1]
        t = torch.linspace(0.0, 1.0, steps, dtype=z0.dtype, device=z0.device)[:, None]
        return self.generate((1 - t) * z0 + t * z1, max_len=max_len, greedy=True, allow_unk=allow_unk)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, max_len: int = 20,
               greedy: bool = False, allow_unk: bool = True) -> Tensor:
        """Sentences decoded from n prior draws z ~ N(0, I)."""
        p = next(self.parameters())
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=p.dtype).to(p.device)
        return self.generate(z, max_len=max_len, greedy=greedy, generator=generator, allow_unk=allow_unk)


class SVAE(SentenceVAE):
    """The standard LSTM sentence VAE: z joins every input and sets the initial state."""

    kind = "svae"

    def __init__(self, vocab_size: int, latent_dim: int, embed_dim: int = 64, hidden: int = 128,
                 dropout: float = 0.2, kl_weight: float = 1.0) -> None:
        super().__init__(vocab_size, latent_dim, embed_dim, hidden, dropout, kl_weight)
        self.decoder_rnn = nn.LSTM(embed_dim + latent_dim, hidden, batch_first=True)
        self.init_state = nn.Linear(latent_dim, 2 * hidden)
        self.output = nn.Linear(hidden, vocab_size)

    def _decoder_input(self, emb: Tensor, z: Tensor) -> Tensor:
        return torch.cat([emb, z], -1)

    def _initial_state(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h, c = self.init_state(z).chunk(2, dim=-1)
        return torch.tanh(h).unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous()

    def _logits(self, o: Tensor, z: Tensor) -> Tensor:
        return self.output(o)


class LIDSVAE(SentenceVAE):
    """Sentence VAE whose token logits are the Brenier-map decoder of u_t = [o_t; z].

    Parameters
    ----------
    vocab_size, latent_dim, embed_dim, hidden, dropout, kl_weight
        As for :class:`SentenceVAE`.
    icnn_hidden, icnn_layers : int
        Width and depth of both ICNNs of ``LIDDecoder(hidden + K, V)``.
    strong_convexity : float
        α of both ICNNs.
    beta : {"fixed", "learned", "pca", "random"}
        β = [I; 0] (default: the zero-padded path, cheap for V-wide maps),
        learned, or a fixed orthonormal β: ``"pca"`` the principal directions
        of the training tokens' one-hot vectors (:func:`token_pca_basis`; call
        :meth:`fit_beta` with the training split before training, or load a
        checkpoint that holds it), ``"random"`` a seeded random one.
    backend : {"auto", "fused", "reference"}
        Brenier-map kernels.
    """

    kind = "lidsvae"

    def __init__(self, vocab_size: int, latent_dim: int, embed_dim: int = 64, hidden: int = 128,
                 dropout: float = 0.2, kl_weight: float = 1.0, icnn_hidden: int = 64, icnn_layers: int = 2,
                 strong_convexity: float = 0.5, beta: str = "fixed", backend: str = "auto") -> None:
        super().__init__(vocab_size, latent_dim, embed_dim, hidden, dropout, kl_weight)
        if beta == "within":
            raise ValueError("beta='within' (k-means residual directions) is for image rows, not tokens: "
                             "use beta='fixed', 'pca', 'random' or 'learned' for sentence models")
        if vocab_size < hidden + latent_dim:
            raise ValueError(f"LIDSVAE needs vocab_size >= hidden + latent_dim for an injective token map, "
                             f"got vocab_size={vocab_size}, hidden={hidden}, latent_dim={latent_dim}")
        self.decoder_rnn = nn.LSTM(embed_dim, hidden, batch_first=True)
        self.token_decoder = LIDDecoder(hidden + latent_dim, vocab_size, hidden=icnn_hidden, num_layers=icnn_layers,
                                        strong_convexity=strong_convexity, backend=backend, beta=beta)
        self.config.update(icnn_hidden=icnn_hidden, icnn_layers=icnn_layers, strong_convexity=strong_convexity,
                           beta=beta, backend=backend)

    def fit_beta(self, train_x: Tensor) -> None:
        """Set the ``"pca"`` β from the training sentences (:func:`token_pca_basis`); no-op for other β."""
        if self.config["beta"] == "pca":
            self.token_decoder.beta.set_basis(token_pca_basis(train_x, self.vocab_size, self.hidden,
                                                              self.latent_dim))

    def _decoder_input(self, emb: Tensor, z: Tensor) -> Tensor:
        return emb

    def _initial_state(self, z: Tensor) -> None:
        return None

    def _logits(self, o: Tensor, z: Tensor) -> Tensor:
        return self.token_decoder(torch.cat([o, z], -1))

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) per sentence; ``z`` is (B, K) or (S, B, K) → (B,) or (S, B).

        The decoder LSTM reads words only, so for S latent samples per
        sentence (IWAE, −ELBO) its outputs o_t are computed once and only the
        token decoder runs S times (all S·M real tokens in one call). In
        training mode with dropout the S copies need their own dropout masks:
        then every copy is decoded separately, as the base class does.
        """
        if z.dim() != 3 or (self.training and self.dropout.p > 0):
            return super().log_likelihood(x, z)
        x = trim_padding(x)
        s, b = z.shape[0], x.shape[0]
        if z.shape[1:] != (b, self.latent_dim):
            raise ValueError(f"z must have shape (S, {b}, {self.latent_dim}), got {tuple(z.shape)}")
        inp, tgt = x[:, :-1], x[:, 1:]
        rows = (tgt != PAD_ID).nonzero(as_tuple=True)
        o, _ = self.decoder_rnn(self.embedding(inp))
        o_rows = self.dropout(o[rows])  # (M, H); the identity unless training
        m = o_rows.shape[0]
        lp = self._target_log_probs(o_rows.unsqueeze(0).expand(s, -1, -1).reshape(s * m, -1),
                                    z[:, rows[0]].reshape(s * m, -1), tgt[rows].repeat(s))
        out = torch.zeros(s, b, dtype=lp.dtype, device=x.device)
        return out.index_add(1, rows[0], lp.reshape(s, m))


def token_pca_basis(x: Tensor, vocab_size: int, hidden: int, latent_dim: int) -> Tensor:
    """The ``"pca"`` β (V × (H+K)) of an :class:`LIDSVAE` from training sentences ``x`` (N, T).

    The token decoder's data are the one-hot vectors e_w of the predicted
    tokens (w_1 … ``</s>``); their covariance is diag(p) − p pᵀ with p the
    token frequencies, so the principal directions are its eigenvectors
    (computed from the counts, never from the one-hot matrix). The top K
    directions go to the z block of u = [o; z] — the coordinates whose
    sensitivity the strongly convex maps guarantee (α² per unit of z) then
    move the logits of the most frequent tokens, not of arbitrary ones — and
    the next H to the o block. Columns are orthonormal, each column's sign
    fixed so that its largest-magnitude entry is positive.
    """
    dim = hidden + latent_dim
    if vocab_size < dim:
        raise ValueError(f"token_pca_basis needs vocab_size >= hidden + latent_dim, got {vocab_size} < {dim}")
    x = trim_padding(x)
    tgt = x[:, 1:]
    counts = torch.bincount(tgt[tgt != PAD_ID], minlength=vocab_size).double()
    if counts.numel() > vocab_size:
        raise ValueError(f"token ids must be < vocab_size={vocab_size}, got max id {counts.numel() - 1}")
    p = counts / counts.sum()
    evals, evecs = torch.linalg.eigh(torch.diag(p) - torch.outer(p, p))
    top = evecs.flip(1)[:, :dim]  # descending eigenvalues
    basis = torch.cat([top[:, latent_dim:], top[:, :latent_dim]], 1)  # u = [o; z]: z gets the top K
    idx = basis.abs().argmax(0)
    sign = torch.sign(basis[idx, torch.arange(dim)])
    return (basis * torch.where(sign == 0, 1.0, sign)).contiguous()


def build_sequence_model(config: dict[str, Any], backend: str | None = None) -> SentenceVAE:
    """Rebuild an :class:`SVAE` or :class:`LIDSVAE` from ``model.config``."""
    cfg = dict(config)
    kind = cfg.pop("model", None)
    if kind == "svae":
        return SVAE(**cfg)
    if kind == "lidsvae":
        if backend is not None:
            cfg["backend"] = backend
        return LIDSVAE(**cfg)
    raise ValueError(f"unknown sequence model kind {kind!r}; expected one of {SEQUENCE_MODELS}")
