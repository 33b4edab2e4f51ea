"""``lidvae-ext``: train, evaluate and compare VAEs and LIDVAEs; run benchmarks and demos.

Examples
--------
::

    lidvae-ext compare                                    # VAE vs LIDVAE on digits (K = 32)
    lidvae-ext compare --data fashion-mnist --latent-dim 64 --train-size 10000 --epochs 20
    lidvae-ext compare --data synthetic-text --models svae,lidsvae   # sentence VAEs (LSTM decoders)
    lidvae-ext compare --models gmvae,lidgmvae --clusters 10      # mixture priors (GMVAE vs LIDGMVAE)
    lidvae-ext train --model lidvae --epochs 50 --out runs/lid
    lidvae-ext evaluate runs/lid/checkpoint.pt
    torchrun --nproc_per_node=2 -m lidvae_ext.cli train --model vae --out runs/vae
"""

from __future__ import annotations

import argparse
import math
import runpy
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch


def _model_defaults():
    """The LIDVAE decoder defaults live in :class:`lidvae_ext.training.ModelOptions` (one source of truth)."""
    from .training import ModelOptions

    return ModelOptions()


BETA_CHOICES = ("fixed", "learned", "pca", "random")


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


def _add_data_args(p: argparse.ArgumentParser, default: str | None = "digits") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=default,
                   help="'digits' (sklearn 8x8, default), 'fashion-mnist' (local Debian package "
                        "dataset-fashion-mnist) or a .npy/.npz file; compare also takes text: synthetic-text, "
                        "wordnet or FILE.txt (see `lidvae-ext compare --data synthetic-text --help`)" + ("" if default else "; default: the checkpoint's"))
    g.add_argument("--data-dir", default=None, help="directory with the Fashion-MNIST *-ubyte.gz files")
    g.add_argument("--train-size", type=int, default=None, help="seeded subset of the training split")
    g.add_argument("--test-size", type=int, default=None, help="seeded subset of the held-out split")
    g.add_argument("--seed", type=int, default=0, help="seed of splits, initialization, batches and noise")


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("metrics")
    g.add_argument("--iwae-samples", type=int, default=100, help="importance samples k per example (default 100)")
    g.add_argument("--au-threshold", type=float, default=0.01, help="active-unit variance threshold")
    g.add_argument("--eval-batch-size", type=int, default=256)
    g.add_argument("--diagnostics", type=int, default=None, metavar="N",
                   help="per-dimension decoder sensitivity / Fisher information and SNIS exact-posterior "
                        "spread on N held-out examples (compare default 256, train default 0 = off)")
    g.add_argument("--diagnostic-samples", type=int, default=500, help="SNIS samples per example")


def _add_model_train_args(p: argparse.ArgumentParser) -> None:
    defaults = _model_defaults()
    g = p.add_argument_group("model")
    g.add_argument("--latent-dim", type=int, default=32)
    g.add_argument("--encoder-hidden", type=_widths, default=(256, 256), help="e.g. 256,256")
    g.add_argument("--decoder-hidden", type=_widths, default=(256, 256), help="VAE decoder MLP widths")
    g.add_argument("--icnn-hidden", type=int, default=128, help="LIDVAE ICNN width")
    g.add_argument("--icnn-layers", type=int, default=2, help="LIDVAE ICNN depth L")
    g.add_argument("--strong-convexity", type=float, default=defaults.strong_convexity,
                   help="LIDVAE α (0 = the paper's ICNN)")
    g.add_argument("--beta", choices=BETA_CHOICES, default=defaults.beta,
                   help="LIDVAE β: 'pca' = the training split's top-K principal directions (fixed), "
                        "'fixed' = [I;0], 'random' = a seeded random orthonormal one, 'learned'")
    g.add_argument("--clusters", type=_clusters, default=defaults.clusters,
                   help="mixture components C of the mixture-prior models (gmvae, betagmvae<w>, lidgmvae)")
    g.add_argument("--flow", action="store_true",
                   help="mixture models: follow q(z|x,y) by a volume-preserving flow (two additive couplings, "
                        "alternating halves); per model: the -flow name modifier")
    g.add_argument("--backend", choices=("auto", "fused", "reference"), default="auto",
                   help="Brenier-map kernels (auto: fused if built, else the autograd reference)")
    g.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default="bernoulli")
    g.add_argument("--binarize", action=argparse.BooleanOptionalAction, default=True,
                   help="dynamic binarization for the Bernoulli likelihood (default on)")
    g.add_argument("--gaussian-std", type=float, default=0.1)
    g.add_argument("--learn-std", action="store_true", help="learn the Gaussian likelihood's σ")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=150, help="number of epochs (the maximum with --early-stopping)")
    g.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="hold out --val-fraction of the training split, stop when its -ELBO has not improved "
                        "for PATIENCE epochs and restore the best epoch")
    g.add_argument("--val-fraction", type=float, default=0.1, help="validation share for --early-stopping")
    g.add_argument("--batch-size", type=int, default=128, help="global batch size (split across processes)")
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--threads", type=int, default=None, help="torch threads per process (default: all cores)")
    g.add_argument("--checkpoint-every", type=int, default=1, help="epochs between checkpoints")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out (without one: a notice, then a new run)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoint in --out (without --resume or --overwrite an --out that holds "
                        "one is refused)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The ``lidvae-ext`` argument parser."""
    parser = argparse.ArgumentParser(prog="lidvae-ext", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one model")
    p.add_argument("--model", default="lidvae", help="vae, lidvae, betavae<w>, lidvae-alpha<a>, gmvae, lidgmvae, ...")
    p.add_argument("--kl-weight", type=float, default=None, help="β-VAE KL weight (overrides the model name's)")
    p.add_argument("--out", required=True, help="output directory (checkpoint.pt, history.json, metrics.json)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out metrics after training")
    _add_data_args(p)
    _add_model_train_args(p)
    _add_eval_args(p)

    p = sub.add_parser("evaluate", help="held-out metrics of a checkpoint, as JSON on stdout")
    p.add_argument("checkpoint", help="checkpoint.pt (or the directory holding it)")
    p.add_argument("--backend", choices=("auto", "fused", "reference"), default=None)
    p.add_argument("--threads", type=int, default=None)
    _add_data_args(p, default=None)
    _add_eval_args(p)

    p = sub.add_parser("compare", help="train VAE and LIDVAE side by side and write a report")
    p.add_argument("--models", default="vae,lidvae",
                   help="comma-separated, e.g. vae,lidvae,lidvae-alpha0,betavae0.5 or gmvae,lidgmvae,betagmvae0.2")
    p.add_argument("--out", default="runs/compare", help="output directory")
    p.add_argument("--no-figures", action="store_true")
    _add_data_args(p)
    _add_model_train_args(p)
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


def _options(args: argparse.Namespace):
    from .experiment import DataOptions, EvalOptions
    from .training import ModelOptions, TrainConfig

    check_sizes(args)
    data = DataOptions(args.data, args.data_dir, args.train_size, args.test_size, args.seed)
    model = ModelOptions(args.latent_dim, tuple(args.encoder_hidden), tuple(args.decoder_hidden), args.icnn_hidden,
                         args.icnn_layers, args.strong_convexity, args.beta, args.backend, args.likelihood,
                         args.binarize and args.likelihood == "bernoulli", args.gaussian_std, args.learn_std,
                         clusters=args.clusters, flow=args.flow)
    if args.early_stopping is not None and args.early_stopping < 1:
        raise ValueError(f"--early-stopping PATIENCE must be a positive integer, got {args.early_stopping}")
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
    train = TrainConfig(args.epochs, args.batch_size, args.lr, args.seed, args.au_threshold,
                        args.checkpoint_every, progress=not args.no_progress, early_stopping=args.early_stopping,
                        val_fraction=args.val_fraction)
    default_diag = 256 if args.command == "compare" else 0
    diag = default_diag if args.diagnostics is None else args.diagnostics
    if diag < 0 or (0 < diag < 2) or args.diagnostic_samples < 2:
        raise ValueError(f"--diagnostics needs 0 (off) or >= 2 examples and --diagnostic-samples >= 2, "
                         f"got {diag}, {args.diagnostic_samples}")
    ev = EvalOptions(args.iwae_samples, args.au_threshold, args.eval_batch_size, seed=args.seed,
                     diagnostics=diag, diagnostic_samples=args.diagnostic_samples)
    return data, model, train, ev


def _cmd_train(args: argparse.Namespace) -> int:
    from . import experiment
    from .training import ModelSpec, current_dist

    _refuse_text(args.model, args.data)
    spec = ModelSpec.parse(args.model)
    name = spec.name
    if args.kl_weight is not None:
        spec.kl_weight = args.kl_weight
    data, model, train, ev = _options(args)
    result = experiment.run_train(name if args.kl_weight is None else f"{name}-kl{args.kl_weight:g}",
                                  data, model, train, ev, args.out, args.resume, not args.no_eval,
                                  overwrite=args.overwrite)
    if current_dist().is_main and result.metrics:
        m = result.metrics
        print(f"{name}: active units {m['active_units']}/{m['latent_dim']}, KL {m['kl']:.3f}, "
              f"MI {m['mutual_info']:.3f}, -ELBO {m['neg_elbo']:.3f}, IWAE NLL {m['iwae_nll']:.3f} "
              f"(k={m['iwae_samples']}), train {m['seconds']:.1f}s -> {result.out_dir}")
    return 0


def _refuse_text(model: str, data: str | None) -> None:
    """``train`` serves image models only: a one-line error saying how text models are run."""
    from .experiment_text import TextModelSpec
    from .text import is_text_data

    try:
        TextModelSpec.parse(model)
        text_model = True
    except ValueError:
        text_model = False
    if text_model or is_text_data(data):
        what = f"model {model!r}" if text_model else f"data {data!r}"
        raise ValueError(f"train does not serve sentence VAEs ({what}); train them with `lidvae-ext compare "
                         f"--data {data if is_text_data(data) else 'synthetic-text'} --models "
                         f"{model if text_model else 'lidsvae'} --out DIR` and evaluate "
                         "DIR/<model>/checkpoint.pt with `lidvae-ext evaluate`")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from . import experiment

    check_sizes(args)

    data = None
    if args.data is not None:
        data = experiment.DataOptions(args.data, args.data_dir, args.train_size, args.test_size, args.seed)
    elif any(v is not None for v in (args.data_dir, args.train_size, args.test_size)):
        saved = experiment.data_from_checkpoint(args.checkpoint)
        data = experiment.DataOptions(**{**asdict(saved), **{k: v for k, v in (("data_dir", args.data_dir), (
            "train_size", args.train_size), ("test_size", args.test_size)) if v is not None}})
    diag = args.diagnostics or 0
    if diag < 0 or diag == 1 or args.diagnostic_samples < 2:
        raise ValueError(f"--diagnostics needs 0 (off) or >= 2 examples and --diagnostic-samples >= 2, "
                         f"got {diag}, {args.diagnostic_samples}")
    ev = experiment.EvalOptions(args.iwae_samples, args.au_threshold, args.eval_batch_size, seed=args.seed,
                                diagnostics=diag, diagnostic_samples=args.diagnostic_samples)
    print(experiment.dumps(experiment.run_evaluate(args.checkpoint, data, ev, args.backend)))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from . import experiment
    from .training import parse_model_list

    specs = parse_model_list(args.models)
    data, model, train, ev = _options(args)
    experiment.run_compare(specs, data, model, train, ev, args.out, args.resume, not args.no_figures,
                           overwrite=args.overwrite)
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
        ns = argparse.Namespace(command="bench", bench_args=raw[1:])
        return _cmd_bench(ns)
    if raw[:1] == ["compare"]:  # text data has its own models and options (lidvae_ext.experiment_text)
        from .experiment_text import main_compare, wants_text

        if wants_text(raw[1:]):
            return main_compare(raw[1:])
    args = build_parser().parse_args(raw)
    if args.command == "bench":
        return _cmd_bench(args)
    if args.command not in ("train", "evaluate", "compare"):
        func = getattr(args, "func", None)  # subcommands added by other modules (demo)
        if func is None:
            print(f"lidvae-ext: command {args.command!r} is not available", file=sys.stderr)
            return 2
        result = func(args)
        return int(result or 0)
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
