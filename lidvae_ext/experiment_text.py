"""``lidvae-ext compare --data synthetic-text|wordnet|FILE.txt``: SVAE vs LIDSVAE on sentences.

Trains every model with the same seed, data, batches and budget (through
:func:`lidvae_ext.training.train`: progress bar, atomic checkpoints,
``--resume``), evaluates on the test split, and writes under ``--out``:
``report.json`` (a dict per model), ``report.md``, ``kl_per_dim.png``,
``training_curves.png`` and ``samples.txt`` (reconstructions and samples).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import report
from . import report_readable as readable
from .checkpoint import CheckpointError, check_output_dirs
from .errors import one_line
from .experiment import EvalOptions, output_dir, resume_notice
from .metrics import active_units_at
from .metrics_text import evaluate_text
from .models.sequence import LIDSVAE, SVAE, SentenceVAE
from .nn import BETA_MODES
from .ops import fused_available
from .text import TextDataset, is_text_data, load_text_dataset
from .text.vocab import UNK_ID
from .training import TrainConfig, model_from_checkpoint, parse_spec_list, train

# α = 1: the smallest of the measured α ∈ {0.5, 0.75, 1} that keeps ≥ 0.8·K units active on both
# synthetic-text and WordNet (docs/results.md, "Sentence VAEs"); α = 0.5 keeps 24/32 and 9/32,
# α = 0.75 32/32 and 23/32.
TEXT_STRONG_CONVEXITY = 1.0
# β = "pca": the principal directions of the one-hot training tokens, z's block on the top K (the most
# frequent tokens). With β = [I; 0] the z block moves the logits of tokens H … H+K-1 — arbitrary, mostly
# rare words — and most units collapse (docs/results.md, "Sentence VAEs").
TEXT_BETA = "pca"


@dataclass
class TextModelSpec:
    """``svae``, ``lidsvae``, ``betasvae<w>`` with modifiers ``-alpha<a>``, ``-kl<w>`` and the β modes
    ``-fixed``, ``-pca``, ``-learned``, ``-random`` (LIDSVAE only)."""

    name: str
    model: str
    kl_weight: float = 1.0
    strong_convexity: float | None = None
    beta: str | None = None

    @classmethod
    def parse(cls, text: str) -> "TextModelSpec":
        name = text.strip()
        base, *mods = name.lower().split("-")
        number = r"(\d+(?:\.\d*)?(?:e[-+]?\d+)?|\.\d+)"
        if m := re.fullmatch(r"betasvae" + number, base):
            spec = cls(name, "svae", kl_weight=float(m.group(1)))
        elif base in ("svae", "lidsvae"):
            spec = cls(name, base)
        else:
            raise ValueError(f"unknown text model {text!r}: expected svae, lidsvae or betasvae<w> "
                             "with optional -alpha<a>, -kl<w>, -fixed, -pca, -learned, -random")
        for mod in mods:
            if (m := re.fullmatch(r"alpha" + number, mod)) and spec.model == "lidsvae":
                spec.strong_convexity = float(m.group(1))
            elif m := re.fullmatch(r"kl" + number, mod):
                spec.kl_weight = float(m.group(1))
            elif mod in BETA_MODES and spec.model == "lidsvae":
                spec.beta = mod
            else:
                raise ValueError(f"bad modifier {mod!r} in model {text!r} (alpha and the β modes are LIDSVAE-only)")
        return spec


def parse_text_models(text: str) -> list[TextModelSpec]:
    """Comma-separated sentence-VAE specs; names must be unique."""
    return parse_spec_list(text, TextModelSpec.parse)


@dataclass
class TextModelOptions:
    """Architecture shared by the models of a run (defaults sized for a 2-core CPU)."""

    latent_dim: int = 32
    embed_dim: int = 64
    hidden: int = 128
    dropout: float = 0.2
    icnn_hidden: int = 64
    icnn_layers: int = 2
    strong_convexity: float = TEXT_STRONG_CONVEXITY
    beta: str = TEXT_BETA
    backend: str = "auto"


@dataclass
class TextDataOptions:
    name: str = "synthetic-text"
    data_dir: str | None = None
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    vocab_size: int | None = None
    min_count: int = 1
    max_len: int = 20
    glosses: bool = False

    def load(self) -> TextDataset:
        return load_text_dataset(self.name, self.data_dir, self.train_size, self.val_size, self.test_size, self.seed,
                                 self.vocab_size, self.min_count, self.max_len, self.glosses)


def build_text_model(spec: TextModelSpec, vocab_size: int, opts: TextModelOptions) -> SentenceVAE:
    common = dict(vocab_size=vocab_size, latent_dim=opts.latent_dim, embed_dim=opts.embed_dim, hidden=opts.hidden,
                  dropout=opts.dropout, kl_weight=spec.kl_weight)
    if spec.model == "svae":
        return SVAE(**common)
    alpha = opts.strong_convexity if spec.strong_convexity is None else spec.strong_convexity
    return LIDSVAE(icnn_hidden=opts.icnn_hidden, icnn_layers=opts.icnn_layers, strong_convexity=alpha,
                   beta=spec.beta or opts.beta, backend=opts.backend, **common)


def _text(vocab, rows: torch.Tensor) -> list[str]:
    return [" ".join(vocab.decode(r)) for r in rows]


def token_rate(x: torch.Tensor, token_id: int) -> float:
    """Fraction of the words of id rows ``x`` (specials and padding excluded) that are ``token_id``."""
    words = x >= UNK_ID  # <unk> and the vocabulary's words; not <pad>, <s>, </s>
    return float((x[words] == token_id).sum()) / max(1, int(words.sum()))


def homotopy_ends(x: torch.Tensor, pool: int = 50) -> torch.Tensor:
    """Two test sentences to interpolate between: of the first ``pool`` rows, the two with the most
    known words (fewest ``<unk>``, then the longest; ties by order). The same pair for every model."""
    rows = x[:pool]
    known = ((rows > UNK_ID).sum(1) * 1000 - (rows == UNK_ID).sum(1)).tolist()
    best = sorted(range(len(known)), key=lambda i: (-known[i], i))[:2]
    return rows[best]


def decoded_examples(model: SentenceVAE, ds: TextDataset, show: torch.Tensor, seed: int,
                     max_len: int) -> dict[str, Any]:
    """What a person reads of a sentence VAE: reconstructions, samples, homotopies, without ``<unk>``.

    Returns ``lines`` (reconstructions and samples), ``homotopy`` (the greedy sentences along the line
    between the posterior means of :func:`homotopy_ends`, Bowman et al. 2016) and ``unk_rate_greedy``
    (how much of the *unrestricted* greedy reconstructions is ``<unk>``).
    """
    raw = model.reconstruct(show, max_len=max_len)
    recon = model.reconstruct(show, max_len=max_len, allow_unk=False)
    samples = model.sample(len(show), generator=torch.Generator().manual_seed(seed), max_len=max_len,
                           allow_unk=False)
    greedy = model.sample(len(show), generator=torch.Generator().manual_seed(seed), max_len=max_len, greedy=True,
                          allow_unk=False)
    lines = ["reconstructions (greedy from E_q[z|x]):"]
    lines += [f"  x: {a}\n  →  {b}" for a, b in zip(_text(ds.vocab, show), _text(ds.vocab, recon))]
    lines += ["samples z ~ N(0, I), sampled tokens:", *(f"  {s}" for s in _text(ds.vocab, samples)),
              "samples z ~ N(0, I), greedy tokens:", *(f"  {s}" for s in _text(ds.vocab, greedy))]
    homotopy = []
    if ds.test.shape[0] >= 2:
        pair = homotopy_ends(ds.test)
        path = model.homotopy(pair[:1], pair[1:2], steps=7, max_len=max_len, allow_unk=False)
        ends = _text(ds.vocab, pair)
        homotopy = [f"from: {ends[0]}", *(f"  t={t:.2f}  {s}" for t, s in
                                          zip(torch.linspace(0, 1, 7).tolist(), _text(ds.vocab, path))),
                    f"to:   {ends[1]}"]
    return {"lines": lines, "homotopy": homotopy, "unk_rate_greedy": token_rate(raw, UNK_ID)}


def run_text_compare(specs: list[TextModelSpec], data: TextDataOptions, model_opts: TextModelOptions,
                     train_cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, figures: bool = True,
                     iwae_samples: int = 100, au_threshold: float = 0.01, eval_batch_size: int = 64,
                     n_show: int = 5, overwrite: bool = False) -> dict[str, dict[str, Any]]:
    """Train and evaluate every spec; write the report files; return ``{model: metrics}``.

    A model directory that holds a checkpoint is refused (before anything is trained) unless
    ``resume`` (continue it) or ``overwrite`` (replace it).
    """
    out = Path(out_dir)
    check_output_dirs([out / s.name for s in specs], resume, overwrite)
    with output_dir(out):
        return _run_text_compare(specs, data, model_opts, train_cfg, out, resume, figures, iwae_samples,
                                 au_threshold, eval_batch_size, n_show)


def _run_text_compare(specs: list[TextModelSpec], data: TextDataOptions, model_opts: TextModelOptions,
                      train_cfg: TrainConfig, out: Path, resume: bool, figures: bool, iwae_samples: int,
                      au_threshold: float, eval_batch_size: int, n_show: int) -> dict[str, dict[str, Any]]:
    t0, cpu0 = time.perf_counter(), time.process_time()
    ds = data.load()
    print(f"compare {', '.join(s.name for s in specs)} on {ds.summary()}; K={model_opts.latent_dim}, "
          f"{train_cfg.epochs} epochs, {torch.get_num_threads()} threads", file=sys.stderr, flush=True)
    results: dict[str, dict[str, Any]] = {}
    histories, homotopies = {}, []
    show = ds.test[:n_show]
    unk_rate = token_rate(ds.test, UNK_ID)
    texts = [f"<unk> is {unk_rate:.1%} of the test split's words. The sentences below are decoded with <unk> "
             "excluded (the most probable known word instead); each model's 'raw greedy' line says how much of its "
             "unrestricted greedy reconstructions is <unk>.", ""]
    for spec in specs:
        torch.manual_seed(train_cfg.seed)  # the same encoder/embedding initialization for every model
        model = build_text_model(spec, len(ds.vocab), model_opts)
        if isinstance(model, LIDSVAE):
            model.fit_beta(ds.train)  # β = "pca": principal directions of the training tokens (else a no-op)
        cfg = TrainConfig(**{**asdict(train_cfg), "desc": spec.name})
        extra = {"data": asdict(data), "spec": spec.name, "model_options": asdict(model_opts),
                 "vocab": ds.vocab.to_dict()}
        resume_notice(spec.name, out / spec.name, resume)
        # held-out AU per epoch on the test split, the split of the table (so curve and table agree)
        res = train(model, ds.train, cfg, out / spec.name, val_x=ds.test, resume=resume, extra_state=extra)
        m = evaluate_text(model, ds.test, au_threshold=au_threshold, iwae_samples=iwae_samples,
                          batch_size=eval_batch_size, seed=data.seed, latents=ds.test_latents,
                          fit_x=ds.train if ds.train_latents is not None else None, fit_latents=ds.train_latents)
        m.update(seconds=res.seconds, epochs=res.epochs, model=spec.name, data=ds.name,
                 train_size=int(ds.train.shape[0]), kl_weight=spec.kl_weight,
                 strong_convexity=model.config.get("strong_convexity"), beta=model.config.get("beta"))
        results[spec.name], histories[spec.name] = m, res.history
        print(f"[{spec.name}] AU {m['active_units']}/{m['latent_dim']}, KL {m['kl']:.2f}, MI {m['mutual_info']:.2f}, "
              f"IWAE NLL {m['iwae_nll']:.2f}, PPL {m['ppl']:.1f}"
              + (f", latent R² {m['latent_r2']:.3f}" if "latent_r2" in m else "")
              + f" (train {m['seconds']:.1f}s, eval {m['eval_seconds']:.1f}s)", file=sys.stderr, flush=True)
        shown = decoded_examples(model, ds, show, data.seed, data.max_len)
        m.update(unk_rate_greedy=shown["unk_rate_greedy"])
        report.write_json(out / spec.name / "metrics.json", m)
        report.write_json(out / spec.name / "history.json", res.history)
        texts += [f"## {spec.name}", f"raw greedy reconstructions: {shown['unk_rate_greedy']:.1%} <unk>",
                  *shown["lines"], ""]
        homotopies.append((f"Homotopies: {spec.name}", shown["homotopy"]))
    (out / "samples.txt").write_text("\n".join(texts) + "\n")
    if figures:
        readable.plot_collapse_profile(results, out / "collapse_profile.png")
        report.plot_kl_per_dim(results, out / "kl_per_dim.png")
        report.plot_training_curves(histories, out / "training_curves.png")
    meta = {"data": ds.name, "sizes": [int(ds.train.shape[0]), int(ds.val.shape[0]), int(ds.test.shape[0])],
            "vocab_size": len(ds.vocab), "models": [s.name for s in specs], "model_options": asdict(model_opts),
            "train": asdict(train_cfg), "iwae_samples": iwae_samples, "au_threshold": au_threshold,
            "threads": torch.get_num_threads(), "fused_kernels": fused_available("cpu"), "torch": torch.__version__,
            "total_seconds": round(time.perf_counter() - t0, 1),
            "total_cpu_seconds": round(time.process_time() - cpu0, 1)}
    meta["unk_rate_test"] = round(unk_rate, 4)
    report.write_json(out / "report.json", results)
    table = markdown_table_text(results)
    note = (f"Test split of {ds.test.shape[0]} sentences; IWAE with k = {iwae_samples}; perplexity "
            f"exp(Σ NLL / Σ tokens) with </s> counted; AU threshold {au_threshold}; <unk> is {unk_rate:.1%} of the "
            "test words" + ("; latent R²: linear regression from posterior means (fitted on the training split) to "
                            "the generating latents." if ds.test_latents is not None else "."))
    extra = [("Notes", [note, "Reconstructions and samples of every model: samples.txt."]), *homotopies]
    figs = [f for f, _, _ in readable.FIGURES if (out / f).is_file()]
    (out / "report.md").write_text(readable.markdown(results, meta, table, figs, extra))
    readable.write_html(out / "report.html", results, meta, table, extra)
    print(table, flush=True)
    print(f"wrote {out / 'report.json'}, {out / 'report.md'}, samples.txt and figures in {meta['total_seconds']}s total "
          f"({meta['total_cpu_seconds']}s CPU time)",
          file=sys.stderr, flush=True)
    return results


_TEXT_DATA_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "data_dir": (str, type(None)), "train_size": (int, type(None)), "val_size": (int, type(None)),
    "test_size": (int, type(None)), "seed": (int,), "vocab_size": (int, type(None)), "min_count": (int,),
    "max_len": (int,), "glosses": (bool,)}


def text_data_from_checkpoint(path: Path | None, saved: dict[str, Any]) -> TextDataOptions:
    """The :class:`TextDataOptions` a sentence-VAE checkpoint records; ``CheckpointError`` if malformed."""
    for key, value in saved.items():
        if key not in _TEXT_DATA_TYPES:
            raise CheckpointError(path, f"malformed: 'data' has an unknown entry {key!r:.40} "
                                        f"(expected {', '.join(_TEXT_DATA_TYPES)})")
        kinds = _TEXT_DATA_TYPES[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise CheckpointError(path, f"malformed: 'data' entry {key!r} is {value!r:.60} ({type(value).__name__})")
    return TextDataOptions(**saved)


def evaluate_text_checkpoint(path: Path, state: dict[str, Any], data: Any = None,
                             eval_opts: EvalOptions | None = None, backend: str | None = None,
                             label: str | None = None) -> dict[str, Any]:
    """Metrics of a saved sentence VAE (``svae``/``lidsvae``) on the test split of its recorded text data.

    ``data`` (a :class:`lidvae_ext.experiment.DataOptions`, optional) overrides the
    recorded ``name`` and ``seed`` and, where not None, ``data_dir``, ``train_size``
    and ``test_size``; the data must give the vocabulary the model was trained with.
    """
    eval_opts = eval_opts or EvalOptions()
    kind = state["model_config"]["model"]
    if eval_opts.diagnostics:
        raise ValueError(f"--diagnostics is not available for sentence VAEs ({kind}, {path})")
    opts = text_data_from_checkpoint(path, dict(state.get("data", {})))
    if data is not None:
        changes = {"name": data.name, "seed": data.seed}
        changes.update({k: getattr(data, k) for k in ("data_dir", "train_size", "test_size")
                        if getattr(data, k) is not None})
        opts = TextDataOptions(**{**asdict(opts), **changes})
        if not is_text_data(opts.name):
            raise ValueError(f"{path} holds a sentence VAE ({kind}): --data must be text data (synthetic-text, "
                             f"wordnet or a .txt file), got {opts.name!r}")
    if backend is None and state["model_config"].get("backend") == "fused" and not fused_available("cpu"):
        backend = "auto"
    model = model_from_checkpoint(state, backend=backend, source=path)
    ds = opts.load()
    if isinstance(state.get("vocab"), dict) and ds.vocab.to_dict() != state["vocab"]:
        raise ValueError(f"data {ds.name!r} gives a vocabulary of {len(ds.vocab)} words other than the one {path} "
                         "was trained with; evaluate on the data recorded in the checkpoint")
    if len(ds.vocab) != model.config.get("vocab_size", len(ds.vocab)):
        raise ValueError(f"data {ds.name!r} has a vocabulary of {len(ds.vocab)} words, the model of {path} needs "
                         f"{model.config['vocab_size']}")
    out = evaluate_text(model, ds.test, au_threshold=eval_opts.au_threshold, iwae_samples=eval_opts.iwae_samples,
                        batch_size=eval_opts.batch_size, seed=eval_opts.seed, latents=ds.test_latents,
                        fit_x=ds.train if ds.train_latents is not None else None, fit_latents=ds.train_latents)
    out.update(checkpoint=label or str(path), model=state.get("spec", kind), epochs=int(state["epoch"]),
               seconds=float(state["seconds"]), data=ds.name,
               active_units_at=active_units_at(out["au_variance"], eval_opts.au_thresholds))
    return out


def markdown_table_text(results: dict[str, dict[str, Any]]) -> str:
    """One row per model: AU, KL, MI, −ELBO, IWAE NLL, PPL, latent R², train seconds."""
    r2 = any("latent_r2" in m for m in results.values())
    head = "| model | active units | KL | MI | −ELBO | IWAE NLL | PPL |" + (" latent R² |" if r2 else "") + " train (s) |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in results.items():
        row = (f"| {name} | {m['active_units']}/{m['latent_dim']} | {m['kl']:.2f} | {m['mutual_info']:.2f} "
               f"| {m['neg_elbo']:.2f} | {m['iwae_nll']:.2f} | {m['ppl']:.1f} |")
        if r2:
            row += f" {m['latent_r2']:.3f} |" if "latent_r2" in m else " – |"
        lines.append(row + f" {m['seconds']:.1f} |")
    return "\n".join(lines)


def wants_text(argv: list[str]) -> bool:
    """Whether ``--data`` in a ``compare`` argument list names text data."""
    for i, a in enumerate(argv):
        if a == "--data" and i + 1 < len(argv):
            return is_text_data(argv[i + 1])
        if a.startswith("--data="):
            return is_text_data(a.split("=", 1)[1])
    return False


def build_text_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lidvae-ext compare", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                description="SVAE vs LIDSVAE on sentences (text data: synthetic-text, wordnet, FILE.txt)")
    p.add_argument("--data", required=True, help="synthetic-text, wordnet (Debian wordnet-base) or a .txt file "
                                                 "with one sentence per line")
    p.add_argument("--models", default="svae,lidsvae", help="e.g. svae,lidsvae,betasvae0.2,lidsvae-alpha0")
    p.add_argument("--out", default="runs/text", help="output directory")
    p.add_argument("--no-figures", action="store_true")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None, help="WordNet database directory (default: Debian's)")
    for split in ("train", "val", "test"):
        g.add_argument(f"--{split}-size", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary incl. 4 specials (synthetic 1000, wordnet 2000, file: all)")
    g.add_argument("--min-count", type=int, default=1)
    g.add_argument("--max-len", type=int, default=20, help="longest sentence (tokens); longer ones are dropped")
    g.add_argument("--glosses", action="store_true", help="wordnet: also the definitions")
    d = TextModelOptions()
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=int, default=d.latent_dim)
    g.add_argument("--embed-dim", type=int, default=d.embed_dim)
    g.add_argument("--hidden", type=int, default=d.hidden, help="LSTM width (encoder and decoder)")
    g.add_argument("--dropout", type=float, default=d.dropout, help="dropout on the decoder LSTM output")
    g.add_argument("--icnn-hidden", type=int, default=d.icnn_hidden)
    g.add_argument("--icnn-layers", type=int, default=d.icnn_layers)
    g.add_argument("--strong-convexity", type=float, default=d.strong_convexity, help="LIDSVAE α")
    g.add_argument("--beta", choices=BETA_MODES, default=d.beta,
                   help="LIDSVAE β: [I;0], token-PCA directions (z on the top K), learned, random orthonormal")
    g.add_argument("--backend", choices=("auto", "fused", "reference"), default=d.backend)
    t = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=8)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--grad-clip", type=float, default=5.0, help="gradient-norm clipping (0: off)")
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--checkpoint-every", type=int, default=t.checkpoint_every)
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoints under --out (without one: a notice, then a new run)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoints under --out (without --resume or --overwrite they are refused)")
    g.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("metrics")
    g.add_argument("--iwae-samples", type=int, default=100)
    g.add_argument("--au-threshold", type=float, default=0.01)
    g.add_argument("--eval-batch-size", type=int, default=64)
    return p


def main_compare(argv: list[str]) -> int:
    """Entry point for ``lidvae-ext compare`` with text ``--data``; returns the exit status."""
    args = build_text_parser().parse_args(argv)
    from .cli import check_sizes, interrupt_message
    from .training import default_num_threads

    since = time.time()
    try:
        check_sizes(args)
        torch.set_num_threads(args.threads or default_num_threads())
        specs = parse_text_models(args.models)
        data = TextDataOptions(args.data, args.data_dir, args.train_size, args.val_size, args.test_size, args.seed,
                               args.vocab_size, args.min_count, args.max_len, args.glosses)
        opts = TextModelOptions(args.latent_dim, args.embed_dim, args.hidden, args.dropout, args.icnn_hidden,
                                args.icnn_layers, args.strong_convexity, args.beta, args.backend)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          au_threshold=args.au_threshold, checkpoint_every=args.checkpoint_every,
                          grad_clip=args.grad_clip or None, progress=not args.no_progress)
        run_text_compare(specs, data, opts, cfg, args.out, resume=args.resume, figures=not args.no_figures,
                         iwae_samples=args.iwae_samples, au_threshold=args.au_threshold,
                         eval_batch_size=args.eval_batch_size, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"\n{interrupt_message(args.out, since)}", file=sys.stderr)
        return 130
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # RunExists is a FileExistsError
        print(f"lidvae-ext compare: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    return 0
