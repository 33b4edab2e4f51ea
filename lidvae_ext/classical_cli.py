"""``demo`` subcommands: exact-inference posterior collapse in PPCA and a mixture.

Used two ways:

* embedded: the main ``lidvae-ext`` CLI calls :func:`add_demo_parser` on its
  subparsers, giving ``lidvae-ext demo ppca`` and ``lidvae-ext demo gmm``;
* standalone: ``python -m lidvae_ext.classical_cli demo ppca --out DIR``.

Each demo prints a short table and writes ``DIR/<name>.json`` (the numbers)
and ``DIR/<name>.png`` (likelihood surface and posterior vs prior).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["add_demo_parser", "main", "run_ppca", "run_gmm"]


def _write_outputs(out: Path, name: str, report: dict[str, Any],
                   draw: Callable[[Path], Path]) -> tuple[Path, Path]:
    """Write ``out/name.json`` and ``out/name.png``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    png_path = draw(out / f"{name}.png")
    return json_path, png_path


def run_ppca(args: argparse.Namespace) -> int:
    """Handler for ``demo ppca``; returns the exit code."""
    from .classical.demos import format_ppca_table, run_ppca_demo
    from .classical.plots import plot_ppca

    result = run_ppca_demo(seed=args.seed, n=args.n)
    print(format_ppca_table(result.report))
    paths = _write_outputs(Path(args.out), "ppca", result.report,
                           lambda p: plot_ppca(result.plot, p))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def run_gmm(args: argparse.Namespace) -> int:
    """Handler for ``demo gmm``; returns the exit code."""
    from .classical.demos import format_gmm_table, run_gmm_demo
    from .classical.plots import plot_gmm

    if not 0.0 < args.theta < 1.0:
        print(f"error: --theta must lie in (0, 1), got {args.theta}")
        return 2
    result = run_gmm_demo(seed=args.seed, n=args.n, theta=args.theta)
    print(format_gmm_table(result.report))
    paths = _write_outputs(Path(args.out), "gmm", result.report,
                           lambda p: plot_gmm(result.plot, p))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` command (with ``ppca`` and ``gmm``) to ``subparsers``.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers()``.

    Returns
    -------
    argparse.ArgumentParser
        The ``demo`` parser. Each leaf parser sets ``func``, a callable taking
        the parsed Namespace and returning an int exit code.
    """
    demo = subparsers.add_parser(
        "demo", help="exact-inference posterior collapse in classical models",
        description="Posterior collapse <=> non-identifiability, with exact inference "
                    "(Wang, Blei & Cunningham, 2021).")
    demo_sub = demo.add_subparsers(dest="demo_name", metavar="{ppca,gmm}")
    demo_sub.required = True

    ppca = demo_sub.add_parser("ppca", help="probabilistic PCA with a surplus latent")
    ppca.add_argument("--out", default="runs/demo-ppca", help="output directory")
    ppca.add_argument("--seed", type=int, default=0, help="random seed")
    ppca.add_argument("--n", type=_positive_int, default=5000, help="training points")
    ppca.set_defaults(func=run_ppca)

    gmm = demo_sub.add_parser("gmm", help="Gaussian mixture with the weight as latent")
    gmm.add_argument("--out", default="runs/demo-gmm", help="output directory")
    gmm.add_argument("--seed", type=int, default=0, help="random seed")
    gmm.add_argument("--n", type=_positive_int, default=1000, help="points per case")
    gmm.add_argument("--theta", type=float, default=0.3, help="true mixing weight")
    gmm.set_defaults(func=run_gmm)
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m lidvae_ext.classical_cli demo ...``."""
    parser = argparse.ArgumentParser(prog="lidvae-ext")
    sub = parser.add_subparsers(dest="command", metavar="{demo}")
    sub.required = True
    add_demo_parser(sub)
    args = parser.parse_args(None if argv is None else list(argv))
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
