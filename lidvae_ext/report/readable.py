"""The report a person reads: a verdict that holds across thresholds, the figures that show
collapse (collapse profile, latent traversals) and ``report.html`` with every figure embedded.

``report.json`` keeps the numbers; this module turns them into sentences. The verdict is
computed from the per-dimension variances Var_x(E_q[z_d|x]) over a grid of thresholds
(1e-4 … 1), so a claim such as "the LIDVAE keeps more units than the VAE" is stated
together with the range of thresholds where it holds.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.plotting import pyplot, save_figure, sweep_panel

PROFILE_THRESHOLDS = np.logspace(-4, 0, 41)
PROJECT_THRESHOLD = 0.01

WHAT_COLLAPSE_IS = (
    "A VAE's posterior collapses in latent dimension d when q(z_d|x) is the same for every input x: "
    "the dimension then carries no information about the data, and the decoder learns to ignore it. "
    "Wang, Blei & Cunningham (2021) prove that this happens exactly when the latent is not identifiable, "
    "i.e. when the decoder's output does not depend on z_d. The LID models replace the decoder by an "
    "injective map (gradients of input-convex networks), so every dimension stays visible to the decoder.")

METRICS = [
    ("active units (AU)", "A dimension is active when its posterior mean E_q[z_d|x] varies across held-out "
     "inputs: Var_x(E_q[z_d|x]) ≥ a threshold (0.01 by convention, Burda et al. 2016). A collapsed dimension's "
     "mean is the same for every x, so its variance is near 0."),
    ("KL (nats)", "KL(q(z|x) ‖ p(z)) averaged over held-out inputs: how far the posterior moves from the prior. "
     "A collapsed dimension contributes 0."),
    ("MI (nats)", "Mutual information I_q(x; z) between the input and its latent code under q: how much the code "
     "tells about which input produced it (at most log N for N held-out inputs)."),
    ("−ELBO (nats)", "The training objective on held-out data: reconstruction error plus KL; lower is better."),
    ("IWAE NLL (nats)", "An estimate of the negative log-likelihood −log p(x) with k importance samples; lower is "
     "better. It is the fair way to compare how well two models fit: the price of identifiability shows here."),
]

# (file name, title, caption): the figures the report embeds, in this order, when present
FIGURES = [
    ("collapse_profile.png", "Collapse profile",
     "Left: how many dimensions count as active as the threshold on Var_x(E_q[z_d|x]) rises (log scale); the "
     "dotted line is the project's threshold 0.01. A model whose curve stays at K up to larger thresholds keeps "
     "more of its latent space. Middle and right: KL and mutual information per dimension, each model's "
     "dimensions sorted from most to least informative, on a log axis so that near-zero (collapsed) dimensions "
     "remain visible (values below 1e-6, which a Monte-Carlo MI estimate can give, are drawn at 1e-6); grey "
     "markers are the dimensions inactive at 0.01."),
    ("traversals.png", "Latent traversals",
     "Each row sweeps one latent coordinate from −2 to +2 standard deviations of its aggregate posterior around "
     "one held-out input's posterior mean, keeping the others fixed, and decodes. Rows are sorted by KL; the "
     "label says whether the dimension is active. A collapsed dimension's row does not change: the decoder "
     "cannot see it. An identifiable dimension's row changes the image."),
    ("cluster_traversals.png", "Latent traversals within clusters",
     "Mixture-prior models: for the most used components, each row sweeps one z coordinate over ±2 standard "
     "deviations of that component's own spread, starting from a held-out input of the component. Rows are "
     "the dimensions that vary most (top) and least (bottom) within the cluster; a row that does not change is "
     "a dimension the model does not use within that cluster."),
    ("kl_per_dim.png", "KL per dimension (linear scale)",
     "The KL of each latent dimension, sorted; grey bars are inactive dimensions (Var < 0.01). On this linear "
     "axis very small values are invisible: the collapse profile above shows them on a log axis."),
    ("diagnostics.png", "Why a dimension is inactive",
     "Left: how strongly the decoder's output reacts to each dimension (expected Fisher information and squared "
     "Jacobian, log scale). Near zero means the decoder cannot see z_k: the model itself ignores the dimension, "
     "so the exact posterior equals the prior there. Right: the spread of the exact posterior (estimated by "
     "importance sampling; its effective sample size ESS is in the title) against q's. If the decoder sees z_k "
     "and the exact posterior's mean varies with x while q's does not, q collapsed although the model could "
     "use z_k: an inference failure rather than a model one."),
    ("reconstructions.png", "Reconstructions", "Held-out inputs (top) and each model's reconstruction from its "
     "posterior mean."),
    ("samples.png", "Samples", "Decoded draws from the prior, per model."),
    ("cluster_samples.png", "Samples per mixture component", "Decoded draws from each component of the mixture "
     "prior (mixture-prior models)."),
    ("cluster_usage.png", "Cluster usage", "How often each mixture component is the most probable one for "
     "held-out inputs (mixture-prior models)."),
    ("training_curves.png", "Training curves", "Training −ELBO and KL per epoch, and the active units on the "
     "held-out set the metrics use."),
]


def au_profile(variances: list[float], thresholds: np.ndarray = PROFILE_THRESHOLDS) -> np.ndarray:
    """#{d : Var_x(E_q[z_d|x]) ≥ t} for every threshold t (ints, shape of ``thresholds``)."""
    v = np.asarray(variances, dtype=np.float64)
    return (v[None, :] >= np.asarray(thresholds)[:, None]).sum(1)


def _fmt(t: float) -> str:
    return f"{t:.2g}"


def _ranges(relation: np.ndarray, thresholds: np.ndarray) -> list[tuple[int, float, float]]:
    """Maximal runs of equal ``relation`` values as (value, first threshold, last threshold)."""
    runs, start = [], 0
    for i in range(1, len(relation) + 1):
        if i == len(relation) or relation[i] != relation[start]:
            runs.append((int(relation[start]), float(thresholds[start]), float(thresholds[i - 1])))
            start = i
    return runs


def verdict(report: dict[str, dict[str, Any]], threshold: float = PROJECT_THRESHOLD) -> list[str]:
    """Plain sentences: each model's collapsed dimensions at ``threshold`` and at 0.1, and, against the
    first model, the range of thresholds where the comparison holds."""
    names = [n for n, m in report.items() if m.get("au_variance")]
    if not names:
        return []
    lines = []
    for name in names:
        m = report[name]
        k, var = m["latent_dim"], np.asarray(m["au_variance"])
        off = int((var < threshold).sum())
        where = "in no dimension" if off == 0 else f"in {off} of {k} dimensions"
        lines.append(f"The {name}'s posterior collapsed {where} (Var_x(E_q[z_d|x]) < {threshold:g}); "
                     f"at the stricter threshold 0.1, {int((var >= 0.1).sum())} of {k} dimensions are active; "
                     f"mutual information {m['mutual_info']:.2f} nats, IWAE NLL {m['iwae_nll']:.2f} nats.")
    base = names[0]
    for name in names[1:]:
        a, b = au_profile(report[name]["au_variance"]), au_profile(report[base]["au_variance"])
        k = report[name]["latent_dim"]
        parts = []
        for sign, lo, hi in _ranges(np.sign(a - b), PROFILE_THRESHOLDS):
            span = f"at threshold {_fmt(lo)}" if lo == hi else f"at thresholds {_fmt(lo)}–{_fmt(hi)}"
            inside = (PROFILE_THRESHOLDS >= lo) & (PROFILE_THRESHOLDS <= hi)
            if sign == 0:
                vals = sorted(set(a[inside].tolist()))
                detail = f" (both {vals[0]}/{k})" if len(vals) == 1 else ""
                parts.append(f"as many {span}{detail}")
            else:
                at = threshold if lo <= threshold <= hi else float(PROFILE_THRESHOLDS[inside][len(a[inside]) // 2])
                i = int(np.argmin(np.abs(PROFILE_THRESHOLDS - at)))
                parts.append(f"{'more' if sign > 0 else 'fewer'} {span} ({a[i]} against {b[i]} at {_fmt(at)})")
        rel = 100.0 * (report[name]["iwae_nll"] / report[base]["iwae_nll"] - 1.0)
        cost = f"{abs(rel):.1f} % {'higher' if rel > 0 else 'lower'} than"
        parts[0] = parts[0].replace(" at ", " active units at ", 1)
        lines.append(f"Against the {base}, the {name} has {'; '.join(parts)} "
                     f"(the collapse profile shows every threshold); its IWAE NLL is {cost} the {base}'s.")
    return lines


BLIND_FISHER = 0.01  # a dimension whose Fisher information is below this fraction of the model's largest


def diagnosis(name: str, m: dict[str, Any], threshold: float = PROJECT_THRESHOLD) -> str | None:
    """One sentence on *why* the model's inactive dimensions are inactive (needs ``diagnostics``).

    An inactive dimension (Var_x(E_q[z_d|x]) < threshold) is called *invisible to the decoder*
    when its expected Fisher information is below ``BLIND_FISHER`` of the model's largest;
    *collapsed only in q* when the exact posterior's mean varies across inputs (Var_x m_d,
    less its Monte-Carlo noise) more than twice as much as q's; otherwise *weakly used by both*.
    """
    d = m.get("diagnostics")
    if not d:
        return None
    var = np.asarray(m["au_variance"])
    fisher = np.asarray(d["fisher"])
    rel = fisher / max(float(fisher.max()), 1e-300)
    inactive = np.flatnonzero(var < threshold)
    if len(inactive) == 0:
        return (f"Every dimension of the {name} is active, and the decoder sees each one: the weakest has "
                f"{rel.min():.1%} of the largest Fisher information.")
    exact = np.asarray(d["exact_mean_var"]) - np.asarray(d["exact_mean_noise"])
    qvar = np.asarray(d["q_mean_var"])
    blind = [i for i in inactive if rel[i] < BLIND_FISHER]
    q_only = [i for i in inactive if rel[i] >= BLIND_FISHER and exact[i] > 2.0 * qvar[i]]
    weak = len(inactive) - len(blind) - len(q_only)
    return (f"Of the {name}'s {len(inactive)} inactive dimensions, {len(blind)} are invisible to the decoder "
            f"(Fisher information below {BLIND_FISHER:.0%} of its largest: the model itself ignores them), "
            f"{len(q_only)} collapsed only in q (the exact posterior still varies with x: an inference failure), "
            f"and {weak} are weakly used by both (the decoder sees them a little, the exact posterior stays "
            "close to the prior).")


def cluster_diagnosis(name: str, m: dict[str, Any]) -> str | None:
    """One sentence on the cluster y of a mixture model: how much of it the exact posterior p(y|x)
    and q(y|x) carry (needs the ``y_*`` entries of ``diagnostics``)."""
    d = m.get("diagnostics") or {}
    if "y_exact_kl_uniform" not in d:
        return None
    exact, q, gap = d["y_exact_kl_uniform"], d["y_q_kl_uniform"], d["y_gap_kl"]
    return (f"The {name}'s cluster y: the exact posterior p(y|x) is {exact:.2f} nats from uniform and q(y|x) "
            f"{q:.2f} (log C = {math.log(len(d['y_exact_usage'])):.2f} would be certain); q(y|x) misses "
            f"{gap:.2f} nats of p(y|x) on average (KL(p‖q)) and picks the same cluster for "
            f"{d['y_agreement']:.0%} of the inputs (importance sampling, mean ESS {d['y_ess_mean']:.0f} of "
            f"{d['y_num_samples']}).")


def plot_collapse_profile(report: dict[str, dict[str, Any]], path: str | os.PathLike) -> Path | None:
    """AU against the threshold (log x) and sorted per-dimension KL and MI (log y), one curve per model."""
    names = [n for n, m in report.items() if m.get("au_variance")]
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for i, name in enumerate(names):
        m = report[name]
        color = f"C{i}"
        axes[0].semilogx(PROFILE_THRESHOLDS, au_profile(m["au_variance"]), color=color, label=name)
        active = np.asarray(m["au_variance"]) >= PROJECT_THRESHOLD
        for ax, key in ((axes[1], "kl_per_dim"), (axes[2], "mi_per_dim")):
            if key not in m:
                continue
            vals = np.asarray(m[key], dtype=np.float64)
            order = np.argsort(-vals)
            xs = np.arange(1, len(vals) + 1)
            shown = np.maximum(vals[order], 1e-6)
            ax.semilogy(xs, shown, "-", color=color, lw=1, label=name)
            ax.scatter(xs, shown, s=14, c=[color if a else "0.6" for a in active[order]], zorder=3)
    k = max(report[n]["latent_dim"] for n in names)
    axes[0].axvline(PROJECT_THRESHOLD, color="k", ls=":", lw=0.8)
    axes[0].set_ylim(-0.5, k + 0.5)
    axes[0].set_xlabel("threshold t on Var_x(E_q[z_d|x])")
    axes[0].set_ylabel("active units (Var ≥ t)")
    axes[0].set_title("active units against the threshold", fontsize=10)
    axes[1].set_title("KL per dimension (sorted; grey = inactive at 0.01)", fontsize=10)
    axes[2].set_title("mutual information per dimension (sorted)", fontsize=10)
    for ax in axes[1:]:
        ax.set_xlabel("dimension (most to least informative)")
        ax.set_ylabel("nats (log scale)")
    axes[0].legend(fontsize=8)
    return save_figure(fig, path)


@torch.no_grad()
def plot_traversals(models: dict[str, Any], test_x: Tensor, report: dict[str, dict[str, Any]],
                    shape: tuple[int, int] | None, path: str | os.PathLike, example: int = 0,
                    steps: int = 9) -> Path | None:
    """One grid per model: row d sweeps z_d over ±2 aggregate-posterior std around one input's posterior mean.

    Only for image data (``shape`` given) and models with ``encode``/``decode`` on a Gaussian z.
    """
    names = [n for n in models if n in report and report[n].get("au_variance")]
    if shape is None or not names:
        return None
    plt = pyplot()
    h, w = shape
    fig, axes = plt.subplots(1, len(names), figsize=(1.0 + 0.55 * steps * len(names) + 1.5 * len(names),
                                                      0.45 * max(report[n]["latent_dim"] for n in names) + 1.0),
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        model, m = models[name], report[name]
        model.eval()
        device = next(model.parameters()).device
        mean, logvar = model.encode(test_x.to(device))
        spread = (mean.double().var(0) + logvar.double().exp().mean(0)).sqrt()  # aggregate posterior std
        kl = np.asarray(m["kl_per_dim"])
        order = np.argsort(-kl)
        k = len(order)
        var = np.asarray(m["au_variance"])
        labels = [f"z{d} KL {kl[d]:.2f} {'active' if var[d] >= PROJECT_THRESHOLD else 'INACTIVE'}" for d in order]
        offsets = sweep_panel(ax, model, mean[example], spread, order.tolist(), steps, shape, labels)
        ax.set_xticks([c * (w + 1) + w / 2 for c in range(steps)])
        ax.set_xticklabels([f"{o:+.1f}σ" for o in offsets.tolist()], fontsize=6)
        ax.set_title(f"{name}: {m['active_units']}/{k} active", fontsize=10)
    return save_figure(fig, path)


def report_sections(report: dict[str, dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The report's words: title, verdict, what collapse is, the metrics' meanings, the footnote."""
    first = next(iter(report.values()), {})
    return {
        "title": f"Posterior collapse: {', '.join(report)} on {meta.get('data', '?')}",
        "verdict": verdict(report, float(meta.get("au_threshold", PROJECT_THRESHOLD)))
        + [line for n, m in report.items() if (line := diagnosis(n, m)) is not None]
        + [line for n, m in report.items() if (line := cluster_diagnosis(n, m)) is not None],
        "collapse": WHAT_COLLAPSE_IS,
        "metrics": METRICS,
        "footnote": (f"Metrics on {first.get('num_examples', '?')} held-out examples; IWAE with "
                     f"k = {first.get('iwae_samples', '?')}; MI against the aggregate posterior of the whole "
                     "held-out set."),
    }


def markdown(report: dict[str, dict[str, Any]], meta: dict[str, Any], table: str,
             figures: list[str], extra: list[tuple[str, list[str]]] = ()) -> str:
    """``report.md``: verdict, explanation, table, metric meanings, figure captions, the ``extra``
    (heading, lines) sections as preformatted text (e.g. decoded sentences), settings (collapsed)."""
    s = report_sections(report, meta)
    out = [f"# {s['title']}", "", "## Verdict", ""] + [f"- {line}" for line in s["verdict"]]
    out += ["", "## What posterior collapse is", "", s["collapse"], "", "## Results", "", table, "",
            s["footnote"], ""]
    out += [f"- **{name}**: {text}" for name, text in s["metrics"]]
    if figures:
        out += ["", "## Figures", ""]
        for fname, title, caption in FIGURES:
            if fname in figures:
                out += [f"### {title}", "", f"![{title}]({fname})", "", caption, ""]
    for heading, lines in extra:
        out += ["", f"## {heading}", "", "```", *lines, "```"]
    out += ["", "<details><summary>Settings of this run</summary>", "", "```json",
            json.dumps(meta, indent=2, default=str), "```", "", "</details>", ""]
    return "\n".join(out)


def _table_html(table: str) -> str:
    rows = [r.strip().strip("|").split("|") for r in table.strip().splitlines()]
    head, body = rows[0], rows[2:]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    out = [f"<table><thead><tr>{cells}</tr></thead><tbody>"]
    for r in body:
        out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>")
    return "\n".join(out + ["</tbody></table>"])


def write_html(path: str | os.PathLike, report: dict[str, dict[str, Any]], meta: dict[str, Any],
               table: str, extra: list[tuple[str, list[str]]] = ()) -> Path:
    """``report.html``: self-contained (figures as data URIs, no scripts, no network), opens from disk."""
    path = Path(path)
    s = report_sections(report, meta)
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>{esc(s['title'])}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
             "th{background:#eee}td:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd}"
             ".verdict{background:#f3f7ff;border-left:4px solid #36c;padding:0.6em 1em}"
             "figcaption{color:#333;margin:0.3em 0 1.5em}</style></head><body>",
             f"<h1>{esc(s['title'])}</h1>", "<div class='verdict'><h2>Verdict</h2><ul>"]
    parts += [f"<li>{esc(line)}</li>" for line in s["verdict"]]
    parts += ["</ul></div>", "<h2>What posterior collapse is</h2>", f"<p>{esc(s['collapse'])}</p>",
              "<h2>Results</h2>", _table_html(table), f"<p>{esc(s['footnote'])}</p>", "<dl>"]
    parts += [f"<dt><b>{esc(name)}</b></dt><dd>{esc(text)}</dd>" for name, text in s["metrics"]]
    parts += ["</dl>"]
    shown = [(f, t, c) for f, t, c in FIGURES if (path.parent / f).is_file()]
    if shown:
        parts.append("<h2>Figures</h2>")
    for fname, title, caption in shown:
        data = base64.b64encode((path.parent / fname).read_bytes()).decode("ascii")
        parts += [f"<figure><h3>{esc(title)}</h3>", f"<img alt='{esc(title)}' src='data:image/png;base64,{data}'>",
                  f"<figcaption>{esc(caption)}</figcaption></figure>"]
    for heading, lines in extra:
        parts += [f"<h2>{esc(heading)}</h2>", "<pre>", esc("\n".join(lines)), "</pre>"]
    parts += ["<details><summary>Settings of this run</summary><pre>",
              esc(json.dumps(meta, indent=2, default=str)), "</pre></details>", "</body></html>", ""]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path
