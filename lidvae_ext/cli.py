"""``lidvae-ext``: train, evaluate and compare VAEs and LIDVAEs of every family; run benchmarks and demos.

Examples
--------
::

    lidvae-ext compare                                    # VAE vs LIDVAE on digits (K = 32)
    lidvae-ext compare --data fashion-mnist --latent-dim 64 --train-size 10000 --epochs 20
    lidvae-ext compare --data synthetic-text              # sentence VAEs: SVAE vs LIDSVAE (LSTM decoders)
    lidvae-ext compare --models gmvae,lidgmvae --clusters 10      # mixture priors (GMVAE vs LIDGMVAE)
    lidvae-ext train --model lidvae --epochs 50 --out runs/lid
    lidvae-ext train --model lidsvae --data wordnet --out runs/lidsvae
    lidvae-ext evaluate runs/lid/checkpoint.pt
    torchrun --nproc_per_node=2 -m lidvae_ext.cli train --model vae --out runs/vae

One parser serves every family: the model names choose the family (and the data
kind: image rows or sentences), and the options each family reads are in its
own group below. Options whose default depends on the family say so.
"""

from __future__ import annotations

import argparse
import math
import runpy
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

BETA_CHOICES = ("fixed", "learned", "pca", "random", "within")  # nn.BETA_MODES (not imported: a light --help)
# options whose default depends on the family: (image models, sentence models)
FAMILY_DEFAULTS = {"out": ("runs/compare", "runs/text")}


def _widths(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if any(w < 1 for w in out):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return out


def _clusters(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--clusters must be a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"--clusters must be a positive integer, got {value}")
    return value


def _add_data_args(p: argparse.ArgumentParser, evaluate: bool = False) -> None:
    g = p.add_argument_group("data (every family)")
    g.add_argument("--data", default=None,
                   help="images: 'digits' (sklearn 8x8), 'fashion-mnist' (Debian dataset-fashion-mnist) or a "
                        ".npy/.npz file; sentences: 'synthetic-text', 'wordnet' (Debian wordnet-base) or a .txt "
                        "file (default: " + ("the checkpoint's" if evaluate else
                                            "digits, or synthetic-text for sentence models") + ")")
    g.add_argument("--data-dir", default=None, help="directory of the Fashion-MNIST *-ubyte.gz files or of WordNet")
    g.add_argument("--train-size", type=int, default=None, help="seeded subset of the training split")
    g.add_argument("--test-size", type=int, default=None, help="seeded subset of the held-out split")
    g.add_argument("--seed", type=int, default=0, help="seed of splits, initialization, batches and noise")
    if evaluate:
        return
    g = p.add_argument_group("sentence data (sentence family)")
    g.add_argument("--val-size", type=int, default=None, help="validation split size")
    g.add_argument("--vocab-size", type=int, default=None,
                   help="vocabulary incl. 4 specials (synthetic 1000, wordnet 2000, file: all)")
    g.add_argument("--min-count", type=int, default=1)
    g.add_argument("--max-len", type=int, default=20, help="longest sentence (tokens); longer ones are dropped")
    g.add_argument("--glosses", action="store_true", help="wordnet: also the definitions")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metrics (every family)")
    g.add_argument("--iwae-samples", type=int, default=100, help="importance samples k per example")
    g.add_argument("--au-threshold", type=float, default=0.01, help="active-unit variance threshold")
    g.add_argument("--eval-batch-size", type=int, default=None, help="default 256; sentence models 64")
    g.add_argument("--diagnostics", type=int, default=None, metavar="N",
                   help="per-dimension decoder sensitivity / Fisher information and SNIS exact-posterior "
                        "spread on N held-out examples, and for mixture models the exact p(y|x) against q(y|x) "
                        "(compare default 256 for image models, else 0 = off; not for sentence models)")
    g.add_argument("--diagnostic-samples", type=int, default=500, help="SNIS samples per example")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models (every family; defaults: image models / sentence models)")
    g.add_argument("--latent-dim", type=int, default=None, help="K (32 / 32)")
    g.add_argument("--icnn-hidden", type=int, default=None, help="ICNN width of the LID decoders (128 / 64)")
    g.add_argument("--icnn-layers", type=int, default=None, help="ICNN depth L (2 / 2)")
    g.add_argument("--strong-convexity", type=float, default=None,
                   help="α of the LID decoders, 0 = the paper's ICNN (0.5 / 1.0)")
    g.add_argument("--beta", choices=BETA_CHOICES, default=None,
                   help="β of the LID decoders: 'pca' = the training split's top-K principal directions (fixed), "
                        "'within' = the top-K principal directions of the rows' offsets from their k-means centres "
                        "(--clusters of them), 'fixed' = [I;0], 'random' = a seeded random orthonormal one, "
                        "'learned' (lidvae pca, lidgmvae random / pca)")
    g.add_argument("--backend", choices=("auto", "fused", "reference"), default="auto",
                   help="Brenier-map kernels (auto: fused if built, else the autograd reference)")
    g = p.add_argument_group("image models (gaussian and mixture families)")
    g.add_argument("--encoder-hidden", type=_widths, default=(256, 256), help="e.g. 256,256")
    g.add_argument("--decoder-hidden", type=_widths, default=(256, 256), help="VAE/GMVAE decoder MLP widths")
    g.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli")
    g.add_argument("--binarize", action=argparse.BooleanOptionalAction, default=True,
                   help="dynamic binarization for the Bernoulli likelihood")
    g.add_argument("--gaussian-std", type=float, default=0.1)
    g.add_argument("--learn-std", action="store_true", help="learn the Gaussian likelihood's σ")
    g = p.add_argument_group("mixture family (gmvae, lidgmvae, betagmvae<w>)")
    g.add_argument("--clusters", type=_clusters, default=10, help="mixture components C")
    g.add_argument("--flow", action="store_true",
                   help="follow q(z|x,y) by a volume-preserving flow (two additive couplings, alternating "
                        "halves); per model: the -flow name modifier")
    g = p.add_argument_group("sentence family (svae, lidsvae, betasvae<w>)")
    g.add_argument("--embed-dim", type=int, default=64)
    g.add_argument("--hidden", type=int, default=128, help="LSTM width (encoder and decoder)")
    g.add_argument("--dropout", type=float, default=0.2, help="dropout on the decoder LSTM output")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (every family; defaults: image models / sentence models)")
    g.add_argument("--epochs", type=int, default=None,
                   help="number of epochs, the maximum with --early-stopping (150 / 8)")
    g.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop when the validation -ELBO has not improved for PATIENCE epochs and restore the best "
                        "epoch (images: --val-fraction of the training split is held out; sentences: the "
                        "validation split)")
    g.add_argument("--val-fraction", type=float, default=0.1, help="validation share for --early-stopping (images)")
    g.add_argument("--batch-size", type=int, default=None, help="global batch size, split across processes (128 / 64)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--grad-clip", type=float, default=None, help="gradient-norm clipping, 0 = off (off / 5)")
    g.add_argument("--threads", type=int, default=None, help="torch threads per process (default: all cores)")
    g.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint(s) in --out (without one: a notice, then a new run)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint(s) in --out (without --resume or --overwrite they are refused)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The ``lidvae-ext`` argument parser (one for every family)."""
    parser = argparse.ArgumentParser(prog="lidvae-ext", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one model", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="lidvae",
                   help="vae, lidvae, betavae<w>, gmvae, lidgmvae, svae, lidsvae, ... with modifiers "
                        "(-alpha<a>, -kl<w>, -pca/-fixed/-random/-learned, -flow)")
    p.add_argument("--kl-weight", type=float, default=None, help="β-VAE KL weight (overrides the model name's)")
    p.add_argument("--out", required=True, help="output directory (checkpoint.pt, history.json, metrics.json)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out metrics after training")
    _add_data_args(p)
    _add_model_args(p)
    _add_train_args(p)
    _add_eval_args(p)

    p = sub.add_parser("evaluate", help="held-out metrics of a checkpoint (any family), as JSON on stdout",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint.pt (or the directory holding it)")
    p.add_argument("--backend", choices=("auto", "fused", "reference"), default=None)
    p.add_argument("--threads", type=int, default=None)
    _add_data_args(p, evaluate=True)
    _add_eval_args(p)

    p = sub.add_parser("compare", help="train models side by side and write a report",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=None,
                   help="comma-separated, e.g. vae,lidvae,lidvae-alpha0,betavae0.5 or gmvae,lidgmvae or "
                        "svae,lidsvae (default: vae,lidvae for image data, svae,lidsvae for sentences)")
    p.add_argument("--out", default=None, help="output directory (default runs/compare; sentences runs/text)")
    p.add_argument("--no-figures", action="store_true")
    _add_data_args(p)
    _add_model_args(p)
    _add_train_args(p)
    _add_eval_args(p)

    p = sub.add_parser("bench", help="run benchmarks/run.py (arguments are passed through)", add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)

    try:
        from .classical_cli import add_demo_parser
    except ImportError:
        pass
    else:
        add_demo_parser(sub)
    return parser


_POSITIVE_INTS = ("latent_dim", "icnn_hidden", "icnn_layers", "batch_size", "checkpoint_every", "train_size",
                  "val_size", "test_size", "iwae_samples", "eval_batch_size", "diagnostic_samples", "threads",
                  "embed_dim", "hidden", "vocab_size", "min_count", "max_len")
_NONNEGATIVE = ("epochs", "strong_convexity", "kl_weight", "grad_clip", "au_threshold")
_POSITIVE = ("lr", "gaussian_std")


def check_sizes(args: argparse.Namespace) -> None:
    """Raise a one-line ``ValueError`` for a size or rate out of range (before anything is built).

    Checks the options of ``args`` that exist and are not None: counts and
    widths (``--latent-dim``, ``--batch-size``, ...) must be positive integers,
    ``--epochs``, ``--strong-convexity``, ``--kl-weight``, ``--grad-clip`` and
    ``--au-threshold`` finite and >= 0, ``--lr`` and ``--gaussian-std`` finite and > 0.
    """
    def flag(name: str) -> str:
        return "--" + name.replace("_", "-")

    for name in _POSITIVE_INTS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"{flag(name)} must be a positive integer, got {value}")
    for name, positive in [(n, False) for n in _NONNEGATIVE] + [(n, True) for n in _POSITIVE]:
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
            raise ValueError(f"{flag(name)} must be {'> 0' if positive else '>= 0'} and finite, got {value}")
    dropout = getattr(args, "dropout", None)
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ValueError(f"--dropout must be in [0, 1), got {dropout}")


def interrupt_message(out: str | Path | None, since: float) -> str:
    """What a Ctrl-C left under ``out`` (``checkpoint.pt`` and ``*/checkpoint.pt``), in one line.

    ``since`` is the run's start (``time.time()``): checkpoints written after it are this run's.
    """
    if out is None:
        return "interrupted"
    from .checkpoint import CHECKPOINT_NAME

    root = Path(out)
    found = ([root / CHECKPOINT_NAME] if (root / CHECKPOINT_NAME).is_file() else []) + \
        sorted(root.glob(f"*/{CHECKPOINT_NAME}"))
    if not found:
        return f"interrupted before the first checkpoint was written; nothing was saved under {root}"
    ours = [p for p in found if p.stat().st_mtime >= since]
    listed = ", ".join(str(p) for p in (ours or found)[:3]) + (" ..." if len(ours or found) > 3 else "")
    if ours:
        return f"interrupted; the last complete checkpoint is intact ({listed}); continue with --resume"
    return (f"interrupted before this run wrote a checkpoint; {listed} {'is' if len(found) == 1 else 'are'} "
            "unchanged (continue it with --resume)")


def _setup_threads(threads: int | None, world_size: int = 1) -> None:
    from .training import default_num_threads

    torch.set_num_threads(threads or default_num_threads(world_size))


def _specs_and_data(args: argparse.Namespace, names: str | None) -> tuple[list[Any], Any, str]:
    """The model specs, their family (the first's) and the data name, from ``--models``/``--model`` and ``--data``."""
    from .families import parse_model_list
    from .runner.datakinds import data_kind_of_name

    data_kind = data_kind_of_name(args.data) if args.data is not None else None
    if names is None:
        names = "svae,lidsvae" if data_kind == "text" else "vae,lidvae"
    specs = parse_model_list(names)
    from .families import family_of_kind

    families = [family_of_kind(s.model) for s in specs]
    kinds = {f.data_kind for f in families}
    if len(kinds) > 1:
        raise ValueError(f"the models of one run must take the same data; {names!r} mixes "
                         + " and ".join(sorted(kinds)))
    kind = kinds.pop()
    if data_kind is not None and data_kind != kind:
        raise ValueError(f"models {names!r} take {kind}, but --data {args.data!r} is {data_kind} data "
                         f"(image models: digits, fashion-mnist, .npy/.npz; sentence models: synthetic-text, "
                         f"wordnet, .txt)")
    data = args.data if args.data is not None else ("synthetic-text" if kind == "text" else "digits")
    return specs, families[0], data


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def _model_options(args: argparse.Namespace, family: Any) -> Any:
    if family.data_kind == "text":
        from .families.sentence.options import TextModelOptions

        d = TextModelOptions()
        return TextModelOptions(_pick(args.latent_dim, d.latent_dim), args.embed_dim, args.hidden, args.dropout,
                                _pick(args.icnn_hidden, d.icnn_hidden), _pick(args.icnn_layers, d.icnn_layers),
                                _pick(args.strong_convexity, d.strong_convexity), _pick(args.beta, d.beta),
                                args.backend)
    from .core.options import ModelOptions

    d = ModelOptions()
    return ModelOptions(_pick(args.latent_dim, d.latent_dim), tuple(args.encoder_hidden), tuple(args.decoder_hidden),
                        _pick(args.icnn_hidden, d.icnn_hidden), _pick(args.icnn_layers, d.icnn_layers),
                        _pick(args.strong_convexity, d.strong_convexity), _pick(args.beta, d.beta), args.backend,
                        args.likelihood, args.binarize and args.likelihood == "bernoulli", args.gaussian_std,
                        args.learn_std, clusters=args.clusters, flow=args.flow)


def _data_options(args: argparse.Namespace, family: Any, data: str) -> Any:
    from .runner import DataOptions, TextDataOptions

    if family.data_kind == "text":
        return TextDataOptions(data, args.data_dir, args.train_size, args.test_size, args.seed, val_size=args.val_size,
                               vocab_size=args.vocab_size, min_count=args.min_count, max_len=args.max_len,
                               glosses=args.glosses)
    return DataOptions(data, args.data_dir, args.train_size, args.test_size, args.seed)


def _eval_options(args: argparse.Namespace, family: Any | None, default_diagnostics: int) -> Any:
    from .runner import EvalOptions

    defaults = family.cli_defaults if family is not None else {}
    diag = _pick(args.diagnostics, defaults.get("diagnostics", default_diagnostics))
    if diag < 0 or (0 < diag < 2) or args.diagnostic_samples < 2:
        raise ValueError(f"--diagnostics needs 0 (off) or >= 2 examples and --diagnostic-samples >= 2, "
                         f"got {diag}, {args.diagnostic_samples}")
    return EvalOptions(args.iwae_samples, args.au_threshold,
                       _pick(args.eval_batch_size, defaults.get("eval_batch_size", 256)), seed=args.seed,
                       diagnostics=diag, diagnostic_samples=args.diagnostic_samples)


def _options(args: argparse.Namespace, family: Any, data: str):
    from .training import TrainConfig

    check_sizes(args)
    if args.early_stopping is not None and args.early_stopping < 1:
        raise ValueError(f"--early-stopping PATIENCE must be a positive integer, got {args.early_stopping}")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    defaults = {**{f.name: f.default for f in fields(TrainConfig)}, **family.cli_defaults}
    train = TrainConfig(_pick(args.epochs, defaults["epochs"]), _pick(args.batch_size, defaults["batch_size"]),
                        args.lr, args.seed, args.au_threshold, args.checkpoint_every,
                        grad_clip=_pick(args.grad_clip, defaults["grad_clip"]) or None,
                        progress=not args.no_progress, early_stopping=args.early_stopping,
                        val_fraction=args.val_fraction)
    ev = _eval_options(args, family, 256 if args.command == "compare" else 0)
    return _data_options(args, family, data), _model_options(args, family), train, ev


def _cmd_train(args: argparse.Namespace) -> int:
    from .runner import run_train
    from .training import current_dist

    (spec,), family, data = _specs_and_data(args, args.model)
    name = spec.name if args.kl_weight is None else f"{spec.name}-kl{args.kl_weight:g}"
    data_opts, model, train, ev = _options(args, family, data)
    result = run_train(name, data_opts, model, train, ev, args.out, args.resume, not args.no_eval,
                       overwrite=args.overwrite)
    if current_dist().is_main and result.metrics:
        m = result.metrics
        print(f"{spec.name}: active units {m['active_units']}/{m['latent_dim']}, KL {m['kl']:.3f}, "
              f"MI {m['mutual_info']:.3f}, -ELBO {m['neg_elbo']:.3f}, IWAE NLL {m['iwae_nll']:.3f} "
              f"(k={m['iwae_samples']}), train {m['seconds']:.1f}s -> {result.out_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .runner import DataOptions, data_from_checkpoint, dumps, run_evaluate

    check_sizes(args)
    data = None
    if args.data is not None:
        data = DataOptions(args.data, args.data_dir, args.train_size, args.test_size, args.seed)
    elif any(v is not None for v in (args.data_dir, args.train_size, args.test_size)):
        saved = data_from_checkpoint(args.checkpoint)
        data = type(saved)(**{**asdict(saved), **{k: v for k, v in (("data_dir", args.data_dir), (
            "train_size", args.train_size), ("test_size", args.test_size)) if v is not None}})
    ev = _eval_options(args, None, 0)
    ev.batch_size = args.eval_batch_size  # None: the checkpoint's family default (run_evaluate)
    print(dumps(run_evaluate(args.checkpoint, data, ev, args.backend)))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .runner import run_compare

    specs, family, data = _specs_and_data(args, args.models)
    data_opts, model, train, ev = _options(args, family, data)
    out = args.out or FAMILY_DEFAULTS["out"][family.data_kind == "text"]
    run_compare(specs, data_opts, model, train, ev, out, args.resume, not args.no_figures, overwrite=args.overwrite)
    return 0


def find_bench_script() -> Path | None:
    """``benchmarks/run.py`` of the source tree (or of the current directory)."""
    for root in (Path(__file__).resolve().parents[1], Path.cwd()):
        candidate = root / "benchmarks" / "run.py"
        if candidate.is_file():
            return candidate
    return None


def _cmd_bench(args: argparse.Namespace) -> int:
    script = find_bench_script()
    if script is None:
        print("lidvae-ext bench: benchmarks/run.py not found (it ships with the source tree, not the wheel; "
              "run from a checkout of lidvae_ext)", file=sys.stderr)
        return 2
    argv = list(args.bench_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    old = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = old
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lidvae-ext`` console script; returns the exit status."""
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["bench"]:  # pass everything through, including --help
        return _cmd_bench(argparse.Namespace(command="bench", bench_args=raw[1:]))
    args = build_parser().parse_args(raw)
    if args.command not in ("train", "evaluate", "compare"):
        func = getattr(args, "func", None)  # subcommands added by other modules (demo)
        if func is None:
            print(f"lidvae-ext: command {args.command!r} is not available", file=sys.stderr)
            return 2
        return int(func(args) or 0)
    from .errors import TrainingDiverged, one_line
    from .training import current_dist, init_distributed

    info = init_distributed() if args.command in ("train", "compare") else current_dist()
    since = time.time()
    try:
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        _setup_threads(args.threads, info.world_size)
        return {"train": _cmd_train, "evaluate": _cmd_evaluate, "compare": _cmd_compare}[args.command](args)
    except KeyboardInterrupt:
        print(f"\n{interrupt_message(getattr(args, 'out', None), since)}", file=sys.stderr)
        return 130
    except TrainingDiverged as exc:
        print(f"lidvae-ext {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError) as exc:  # CheckpointError: ValueError; RunExists: FileExists
        print(f"lidvae-ext {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    finally:
        import torch.distributed as dist

        if info.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
