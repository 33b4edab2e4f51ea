"""Comparison reports: JSON and markdown/HTML files (:mod:`.tables`), the shared figures
(:mod:`.figures`) and the words a person reads (:mod:`.readable`).

The report layer knows no family: what a family adds (table columns, figures,
sections) comes in as arguments from :mod:`lidvae_ext.runner`.
"""

from .tables import REQUIRED_KEYS, Column, markdown_table, write_json, write_markdown

__all__ = ["Column", "REQUIRED_KEYS", "markdown_table", "write_json", "write_markdown"]
