"""The readable report: the verdict across thresholds, per-dimension MI, report.md/report.html,
and (slow) the HTML as a browser renders it."""

from __future__ import annotations

import math
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from lidvae_ext import cli, report
from lidvae_ext.report import readable
from lidvae_ext.families.mixture.figures import plot_cluster_traversals
from lidvae_ext.core.metrics import mutual_information_per_dim


def _model(var, mi=1.0, nll=100.0):
    k = len(var)
    return {"latent_dim": k, "active_units": int(sum(v >= 0.01 for v in var)), "au_variance": list(var),
            "kl": 1.0, "kl_per_dim": [0.1] * k, "mi_per_dim": [0.05] * k, "mutual_info": mi, "neg_elbo": nll + 1,
            "iwae_nll": nll, "seconds": 1.0, "num_examples": 50, "iwae_samples": 10}


def test_au_profile_counts_variances_at_or_above_each_threshold():
    var = [1e-5, 0.005, 0.01, 0.2, 0.9]
    assert readable.au_profile(var, np.array([1e-6, 0.005, 0.01, 0.011, 0.5, 1.0])).tolist() == [5, 4, 3, 2, 1, 0]


def test_verdict_states_collapse_and_where_the_comparison_holds():
    base = _model([0.001] * 4 + [0.5] * 28, nll=100.0)
    lid = _model([0.05] * 32, nll=101.0)
    lines = readable.verdict({"vae": base, "lidvae": lid})
    assert "vae's posterior collapsed in 4 of 32 dimensions" in lines[0]
    assert "0.1, 28 of 32 dimensions are active" in lines[0]
    assert "lidvae's posterior collapsed in no dimension" in lines[1]
    # on the grid 10^(-4 + i/10): lid has more units for 0.001 < t < 0.05, fewer for 0.05 < t < 0.5
    cmp = lines[2]
    assert "as many active units at thresholds 0.0001–0.001 (both 32/32)" in cmp
    assert "more at thresholds 0.0013–0.04 (32 against 28 at 0.01)" in cmp, cmp
    assert re.search(r"fewer at thresholds 0\.05–0\.4 \(0 against 28 at 0\.\d+\)", cmp), cmp
    assert "as many at thresholds 0.5–1 (both 0/32)" in cmp, cmp
    assert "1.0 % higher than the vae's" in cmp


def test_mutual_information_per_dim_zero_and_log_n():
    n = 64
    mean = torch.zeros(n, 2, dtype=torch.float64)
    mean[:, 1] = torch.arange(n, dtype=torch.float64) * 100.0  # dim 1: separated, dim 0: identical rows
    logvar = torch.zeros(n, 2, dtype=torch.float64)
    mi = mutual_information_per_dim(mean, logvar, torch.Generator().manual_seed(0))
    assert float(mi[0]) == pytest.approx(0.0, abs=1e-12)
    assert float(mi[1]) == pytest.approx(math.log(n), abs=1e-9)
    # chunking does not change the result
    small = mutual_information_per_dim(mean, logvar, torch.Generator().manual_seed(0), max_elements=7)
    torch.testing.assert_close(small, mi, rtol=0, atol=1e-12)


def test_markdown_and_html_are_written_self_contained(tmp_path):
    rep = {"vae": _model([0.001] * 4 + [0.5] * 28), "lidvae": _model([0.05] * 32)}
    readable.plot_collapse_profile(rep, tmp_path / "collapse_profile.png")
    meta = {"data": "digits", "au_threshold": 0.01, "seed": 123456789}
    report.write_markdown(tmp_path / "report.md", rep, meta)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Verdict") < md.index("## Results") < md.index("## Figures")
    assert "![Collapse profile](collapse_profile.png)" in md and "traversals.png" not in md
    assert md.index("<details>") < md.index("123456789")  # settings only inside the collapsed section
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 1
    assert "collapsed in 4 of 32 dimensions" in page and "<details>" in page


@pytest.mark.slow
def test_report_html_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    out = tmp_path / "run"
    assert cli.main(["compare", "--out", str(out), "--epochs", "3", "--no-progress", "--diagnostics", "50"]) == 0
    page = out / "report.html"
    n_figures = page.read_text().count("data:image/png;base64,")
    assert n_figures >= 6  # profile, traversals, KL, diagnostics, reconstructions, samples (+ curves)
    # a copy with a check appended: the page's title becomes the count of images that decoded
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", "<script>window.onload=function(){var ok=0;"
                     "for(const i of document.images){if(i.complete&&i.naturalWidth>0)ok++;}"
                     "document.title='decoded '+ok+' of '+document.images.length;};</script></body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert f"<title>decoded {n_figures} of {n_figures}</title>" in dom.stdout, dom.stdout[:500]
    shot = tmp_path / "report.png"
    run = subprocess.run(flags + ["--hide-scrollbars", "--window-size=1200,2600", f"--screenshot={shot}",
                                  page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_diagnosis_sorts_inactive_dimensions_by_cause():
    m = _model([0.5, 0.001, 0.002, 0.003])
    m["diagnostics"] = {"fisher": [1.0, 0.001, 0.5, 0.5],  # dim 1: 0.1 % of the largest -> invisible
                        "exact_mean_var": [0.5, 0.0, 0.30, 0.004],  # dim 2: exact mean varies, q's does not
                        "exact_mean_noise": [0.0, 0.0, 0.01, 0.001],
                        "q_mean_var": [0.5, 0.001, 0.002, 0.003]}
    line = readable.diagnosis("vae", m)
    assert line.startswith("Of the vae's 3 inactive dimensions, 1 are invisible to the decoder")
    assert "1 collapsed only in q" in line and "and 1 are weakly used by both" in line
    m["au_variance"] = [0.5] * 4
    assert "weakest has 0.1% of the largest Fisher information" in readable.diagnosis("vae", m)
    assert readable.diagnosis("vae", _model([0.5])) is None  # no diagnostics, no sentence


def test_cluster_diagnosis_sentence():
    m = _model([0.5])
    assert readable.cluster_diagnosis("gmvae", m) is None  # no diagnostics
    m["diagnostics"] = {"fisher": [1.0]}
    assert readable.cluster_diagnosis("gmvae", m) is None  # a Gaussian-prior model's diagnostics
    m["diagnostics"].update(y_exact_kl_uniform=1.5, y_q_kl_uniform=0.25, y_gap_kl=1.125, y_agreement=0.5,
                            y_ess_mean=123.4, y_num_samples=1000, y_exact_usage=[0.1] * 10)
    line = readable.cluster_diagnosis("lidgmvae", m)
    assert line.startswith("The lidgmvae's cluster y: the exact posterior p(y|x) is 1.50 nats from uniform and "
                           "q(y|x) 0.25 (log C = 2.30 would be certain)")
    assert "misses 1.12 nats" in line and "same cluster for 50% of the inputs" in line
    assert "mean ESS 123 of 1000" in line


def test_traversal_figures_only_where_they_apply(tmp_path):
    from lidvae_ext.families.mixture.models import GMVAE
    from lidvae_ext.families.gaussian.models import VAE

    torch.manual_seed(0)
    x = (torch.rand(40, 16) < 0.4).float()
    vae = VAE(16, 3, encoder_hidden=(8,), decoder_hidden=(8,))
    gm = GMVAE(16, 3, 2, encoder_hidden=(8,), decoder_hidden=(8,))
    rep = {"vae": _model([0.5, 0.2, 0.001])}
    assert readable.plot_traversals({"vae": vae}, x, rep, None, tmp_path / "t.png") is None  # not images
    assert plot_cluster_traversals({}, x, (4, 4), tmp_path / "c.png") is None  # no mixture model: no figure
    assert readable.plot_traversals({"vae": vae}, x, rep, (4, 4), tmp_path / "t.png").stat().st_size > 1000
    out = plot_cluster_traversals({"gmvae": gm}, x, (4, 4), tmp_path / "c.png", top=2, bottom=1)
    assert out is not None and out.stat().st_size > 1000
