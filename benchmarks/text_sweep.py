"""One small sentence-VAE run for the sweeps of docs/results.md ("What mattered: the sweep").

The package's models and ``evaluate_text``, a plain loop (batch 64, gradient clip 5) with
Adam or RMSprop and an optional linear KL warm-up (applied to whichever model is run);
appends one JSON line of metrics to ``--out``. Example::

    python benchmarks/text_sweep.py --model lidsvae --beta pca --alpha 0.5 --train 8000 --epochs 6 --tag pca0.5
"""

import argparse
import json
import math
import time

import torch

from lidvae_ext.data.text import load_text_dataset
from lidvae_ext.families.sentence.models import LIDSVAE, SVAE
from lidvae_ext.families.sentence.metrics import evaluate_text


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="lidsvae"); p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--beta", default="fixed"); p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--opt", default="adam"); p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train", type=int, default=8000); p.add_argument("--test", type=int, default=500)
    p.add_argument("--K", type=int, default=32); p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embed", type=int, default=64); p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--icnn", type=int, default=64); p.add_argument("--warmup", type=float, default=0.0)
    p.add_argument("--iwae", type=int, default=20); p.add_argument("--data", default="synthetic-text")
    p.add_argument("--tag", default=""); p.add_argument("--out", default="text_sweep.jsonl")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter(); c0 = time.process_time()
    ds = load_text_dataset(a.data, train_size=a.train, val_size=100, test_size=a.test, seed=0)
    V = len(ds.vocab)
    torch.manual_seed(0)
    common = dict(vocab_size=V, latent_dim=a.K, embed_dim=a.embed, hidden=a.hidden, dropout=a.dropout)
    if a.model == "svae":
        m = SVAE(**common)
    else:
        m = LIDSVAE(icnn_hidden=a.icnn, strong_convexity=a.alpha, beta=a.beta, **common)
        m.fit_beta(ds.train)
    opt = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[a.opt](m.parameters(), lr=a.lr)
    n = ds.train.shape[0]; steps_per = math.ceil(n / 64); step = 0
    hist = []
    for ep in range(a.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(ep)); torch.manual_seed(ep)
        s = torch.zeros(3, dtype=torch.float64)
        for i in range(0, n, 64):
            xb = ds.train[order[i:i+64]]
            w = min(1.0, step / (a.warmup * steps_per)) if a.warmup > 0 else 1.0
            m.kl_weight = w
            out = m(xb)
            opt.zero_grad(); out["loss"].backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0); opt.step()
            step += 1
            s += torch.tensor([float(out["rec"]), float(out["kl"]), 1.0], dtype=torch.float64)
        hist.append((round(float(s[0]/s[2]),2), round(float(s[1]/s[2]),3)))
        print(a.tag, ep, hist[-1], round(time.perf_counter()-t0), flush=True)
    m.kl_weight = 1.0
    ev = evaluate_text(m, ds.test, iwae_samples=a.iwae, latents=ds.test_latents,
                       fit_x=ds.train if ds.train_latents is not None else None, fit_latents=ds.train_latents)
    res = {k: ev[k] for k in ("active_units", "kl", "mutual_info", "neg_elbo", "iwae_nll", "ppl") }
    res["latent_r2"] = ev.get("latent_r2"); res["eval_s"] = round(ev["eval_seconds"], 1)
    res.update(vars(a)); res["hist"] = hist; res["wall"] = round(time.perf_counter()-t0, 1); res["cpu"] = round(time.process_time()-c0, 1)
    print(json.dumps(res), flush=True)
    with open(a.out, "a") as f: f.write(json.dumps(res) + "\n")
    return res


if __name__ == "__main__":
    main()
