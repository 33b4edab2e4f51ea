"""Comparison reports as files: ``report.json``/``metrics.json`` (atomic JSON) and ``report.md`` + ``report.html``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import readable

# An extra column of the comparison table: (header, cell of one model's metrics).
Column = tuple[str, Callable[[dict[str, Any]], str]]

REQUIRED_KEYS = ("active_units", "latent_dim", "kl", "kl_per_dim", "mutual_info", "neg_elbo", "iwae_nll", "seconds")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (temp file + ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def markdown_table(report: dict[str, dict[str, Any]], columns: Sequence[Column] = ()) -> str:
    """One row per model: AU, KL, MI, −ELBO, IWAE NLL, training seconds.

    When the metrics hold them, also AU at every threshold of ``active_units_at``,
    the best/last epoch of an early-stopped run, and the ``columns`` a family adds
    (the mixture family: active clusters and cluster accuracy).
    """
    first = next(iter(report.values()), {})
    thresholds = list(first.get("active_units_at", {}))
    stopped = any(m.get("best_epoch") is not None for m in report.values())
    head = "| model | active units |" + "".join(f" AU≥{t} |" for t in thresholds)
    head += " KL (nats) | MI (nats) | −ELBO (nats) | IWAE NLL (nats) | train time (s) |"
    head += " best / last epoch |" if stopped else ""
    head += "".join(f" {title} |" for title, _ in columns)
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, m in report.items():
        k = m["latent_dim"]
        row = f"| {name} | {m['active_units']}/{k} |"
        row += "".join(f" {m.get('active_units_at', {}).get(t, '–')}/{k} |" for t in thresholds)
        row += (f" {m['kl']:.2f} | {m['mutual_info']:.2f} | {m['neg_elbo']:.2f} | {m['iwae_nll']:.2f} "
                f"| {m['seconds']:.1f} |")
        if stopped:
            row += f" {m.get('best_epoch', '–')} / {m.get('epochs', '–')} |"
        row += "".join(f" {cell(m)} |" for _, cell in columns)
        lines.append(row)
    return "\n".join(lines)


def write_markdown(path: str | os.PathLike, report: dict[str, dict[str, Any]], meta: dict[str, Any],
                   table: str | None = None, extra: Sequence[tuple[str, list[str]]] = ()) -> Path:
    """``report.md`` and, beside it, the self-contained ``report.html``: the verdict in words, what
    collapse is, the table, what each metric means, each figure present with its caption, and the
    run's settings in a collapsed section (:mod:`lidvae_ext.report.readable`).

    ``table`` defaults to :func:`markdown_table`; ``extra`` are (title, lines) sections a family adds.
    """
    path = Path(path)
    table = markdown_table(report) if table is None else table
    figures = [f for f, _, _ in readable.FIGURES if (path.parent / f).is_file()]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(readable.markdown(report, meta, table, figures, list(extra)))
    os.replace(tmp, path)
    readable.write_html(path.with_name("report.html"), report, meta, table, list(extra))
    return path



