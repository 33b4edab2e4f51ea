"""Sentence VAEs: text data, masking, IWAE/PPL against brute force, fused vs reference token decoder, CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lidvae_ext.families.sentence.metrics import evaluate_text, iwae_log_likelihood, linear_r2, perplexity, predicted_tokens
from lidvae_ext.families import build_model
from lidvae_ext.families.sentence.models import LIDSVAE, SVAE, token_pca_basis, trim_padding
from lidvae_ext.ops import fused_available
from lidvae_ext.data.text import BOS_ID, check_tokens, EOS_ID, generate_synthetic_text, load_text_dataset, PAD_ID, pad_sequences, read_text_file, read_wordnet_examples, SyntheticTextConfig, tokenize, Vocabulary
from lidvae_ext.data.text.corpus import WORDNET_DIR, WORDNET_FILES

V = 12  # tiny vocabulary: 4 specials + 8 words


def _batch() -> torch.Tensor:
    return pad_sequences([[4, 5, 6], [7], [8, 9, 10, 11, 4, 5], [6, 6]], V)


def _models(dtype=torch.float64, backend="auto"):
    torch.manual_seed(0)
    svae = SVAE(V, latent_dim=2, embed_dim=3, hidden=4, dropout=0.0).to(dtype)
    torch.manual_seed(0)
    lid = LIDSVAE(V, latent_dim=2, embed_dim=3, hidden=4, dropout=0.0, icnn_hidden=5,
                  strong_convexity=0.5, backend=backend).to(dtype)
    return {"svae": svae, "lidsvae": lid}


# ----------------------------------------------------------------------------- vocabulary / files
def test_vocabulary_round_trip_and_errors():
    vocab = Vocabulary.build([tokenize("The cat sat."), tokenize("the dog sat")], max_size=7)
    assert vocab.itos[:4] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert vocab.itos[4:] == ["sat", "the", "."]  # by frequency, ties alphabetical, max_size incl. specials
    assert vocab.encode(["the", "cat"]) == [5, 3]
    assert vocab.decode([BOS_ID, 5, 4, EOS_ID, 6]) == ["the", "sat"]
    assert Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict()))).itos == vocab.itos
    with pytest.raises(ValueError, match="must start with the specials"):
        Vocabulary(["a", "b", "c", "d", "e"])
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["<pad>", "<s>", "</s>", "<unk>", "a", "a"])
    with pytest.raises(ValueError, match="without whitespace"):
        Vocabulary(["<pad>", "<s>", "</s>", "<unk>", "a b"])
    with pytest.raises(ValueError, match="out of range"):
        vocab.decode([99])
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build([["a"]], max_size=3)
    with pytest.raises(ValueError, match="tokens'"):
        Vocabulary.from_dict({"itos": []})
    with pytest.raises(ValueError, match="sentence 1 is empty"):
        pad_sequences([[4], []], V)
    with pytest.raises(ValueError, match=r"outside \[3, 12\)"):
        pad_sequences([[4, 12]], V)
    x = _batch()
    assert check_tokens(x, V).tolist() == [5, 3, 8, 4]
    bad = x.clone()
    bad[1, 4] = 5  # a word after the padding
    with pytest.raises(ValueError, match="after padding"):
        check_tokens(bad, V)
    bad = x.clone()
    bad[1, 3] = 5  # </s> not last
    with pytest.raises(ValueError, match="exactly one </s>"):
        check_tokens(bad, V)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        check_tokens(x, 5)


def test_text_file_loading_and_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt does not exist"):
        read_text_file(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError, match="no non-empty lines"):
        read_text_file(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ok line\n\xff\xfe bad\n")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        read_text_file(binary)
    good = tmp_path / "corpus.txt"
    good.write_text("\n".join(f"the cat number {i} sat on the mat ." for i in range(40)) + "\n")
    ds = load_text_dataset(str(good), seed=3)
    assert (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]) == (32, 4, 4)
    check_tokens(ds.train, len(ds.vocab))
    assert ds.vocab.decode(ds.train[0])[:3] == ["the", "cat", "number"]
    with pytest.raises(ValueError, match="cannot split 40 sentences"):
        load_text_dataset(str(good), train_size=40)


def test_wordnet_missing_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        read_wordnet_examples(tmp_path)


@pytest.mark.skipif(not all((WORDNET_DIR / f).is_file() for f in WORDNET_FILES),
                    reason="WordNet database not installed (Debian package wordnet-base)")
def test_wordnet_examples():
    ex = read_wordnet_examples()
    assert len(ex) > 40000 and "the team is a unit" in ex and not any('"' in s for s in ex)
    assert len(read_wordnet_examples(glosses=True)) > 150000
    ds = load_text_dataset("wordnet", train_size=500, val_size=50, test_size=50, vocab_size=300)
    assert len(ds.vocab) == 300 and ds.train.shape[0] == 500
    check_tokens(ds.test, len(ds.vocab))


def test_synthetic_generator_is_deterministic():
    cfg = SyntheticTextConfig(vocab_size=200)
    a, za, vocab = generate_synthetic_text(300, seed=5, config=cfg)
    b, zb, _ = generate_synthetic_text(300, seed=5, config=cfg)
    c, zc, _ = generate_synthetic_text(300, seed=6, config=cfg)
    assert torch.equal(a, b) and torch.equal(za, zb)
    assert not torch.equal(a, c) and not torch.equal(za, zc)
    lengths = check_tokens(a, len(vocab)) - 2
    assert a.shape == (300, 22) and za.shape == (300, 4) and len(vocab) == 200
    assert int(lengths.min()) >= 5 and int(lengths.max()) <= 20 and lengths.float().std() > 2
    ds = load_text_dataset("synthetic-text", train_size=50, val_size=10, test_size=10, vocab_size=200, seed=5)
    assert torch.equal(ds.train, a[:50]) and torch.equal(ds.test_latents, za[60:70])  # prefix-stable
    assert torch.equal(generate_synthetic_text(1500, seed=5, config=cfg)[0][:300], a)


# ----------------------------------------------------------------------------- masking
@pytest.mark.parametrize("kind", ["svae", "lidsvae"])
def test_padding_contributes_nothing(kind):
    """Batch loss and gradients equal the sums over each sentence alone (no padding at all)."""
    model = _models()[kind]
    x = _batch()
    eps = torch.randn(x.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    wide = torch.nn.functional.pad(x, (0, 5))  # extra padding columns change nothing either
    out = model.loss_terms(wide, eps)
    total = out["loss"].sum()
    grads = torch.autograd.grad(total, list(model.parameters()), allow_unused=True)
    single_loss = 0.0
    single_grads = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(x.shape[0]):
        row = trim_padding(x[i:i + 1])
        assert not bool((row == PAD_ID).any())
        li = model.loss_terms(row, eps[i:i + 1])["loss"].sum()
        single_loss += float(li.detach())
        for acc, g in zip(single_grads, torch.autograd.grad(li, list(model.parameters()), allow_unused=True)):
            if g is not None:
                acc += g
    assert float(total.detach()) == pytest.approx(single_loss, rel=1e-12, abs=1e-12)
    for (name, _), g, s in zip(model.named_parameters(), grads, single_grads):
        torch.testing.assert_close(g if g is not None else torch.zeros_like(s), s, rtol=1e-10, atol=1e-12,
                                   msg=lambda m: f"{name}: {m}")
    assert float(grads[0][PAD_ID].abs().max()) == 0.0  # the <pad> embedding gets no gradient
    n_tok = predicted_tokens(x)
    assert n_tok.tolist() == [4, 2, 7, 3]  # words + </s>, <s> excluded


# ----------------------------------------------------------------------------- IWAE / PPL vs brute force
def _stepwise_log_likelihood(model, x, z):
    """log p(x|z) by decoding one token at a time (independent of the batched teacher-forced path)."""
    out = []
    for i in range(x.shape[0]):
        row = trim_padding(x[i:i + 1])[0]
        zi = z[i:i + 1]
        state, total = model._initial_state(zi), 0.0
        for t in range(1, row.shape[0]):
            emb = model.embedding(row[t - 1].view(1, 1))
            o, state = model.decoder_rnn(model._decoder_input(emb, zi.unsqueeze(1)), state)
            total = total + torch.log_softmax(model._logits(o[:, 0], zi), -1)[0, row[t]]
        out.append(total)
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["svae", "lidsvae"])
def test_log_likelihood_matches_stepwise_decoding(kind):
    model = _models()[kind].eval()
    x = _batch()
    z = torch.randn(3, x.shape[0], 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    batched = model.log_likelihood(x, z)
    assert batched.shape == (3, 4)
    for s in range(3):
        torch.testing.assert_close(batched[s], _stepwise_log_likelihood(model, x, z[s]), rtol=1e-10, atol=1e-10)


def test_lidsvae_sample_batched_likelihood_keeps_dropout_per_copy():
    """Training mode with dropout: the S copies of a sentence get their own dropout masks (no shared o_t)."""
    torch.manual_seed(0)
    model = LIDSVAE(V, latent_dim=2, embed_dim=3, hidden=4, dropout=0.5, icnn_hidden=5).double().train()
    x = _batch()
    z = torch.randn(1, x.shape[0], 2, dtype=torch.float64).expand(6, -1, -1)  # 6 copies of the same z
    with torch.no_grad():
        ll = model.log_likelihood(x, z)
    assert float(ll.std(0).min()) > 1e-6  # different masks → different values
    model.eval()
    with torch.no_grad():
        ll = model.log_likelihood(x, z)
    torch.testing.assert_close(ll, ll[:1].expand(6, -1), rtol=0, atol=1e-12)


def test_token_pca_basis_against_one_hot_svd():
    """The 'pca' β = principal directions of the one-hot target tokens, z block = the top K."""
    seqs = [torch.randint(4, 30, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in range(1, 40)]
    seqs += [[4] * 5] * 20 + [[5, 6]] * 10  # a few clearly frequent tokens
    x = pad_sequences(seqs, 30)
    hidden, k = 5, 3
    basis = token_pca_basis(x, 30, hidden, k)
    assert basis.shape == (30, hidden + k)
    torch.testing.assert_close(basis.t() @ basis, torch.eye(hidden + k, dtype=basis.dtype), rtol=0, atol=1e-10)
    tgt = x[:, 1:]
    onehot = torch.nn.functional.one_hot(tgt[tgt != PAD_ID], 30).double()
    _, sv, vh = torch.linalg.svd(onehot - onehot.mean(0), full_matrices=False)
    assert float(sv[hidden + k - 1] - sv[hidden + k]) > 1e-6  # the subspaces below are well defined
    top_k, next_h = vh[:k].t(), vh[k:k + hidden].t()

    def same_span(a, b):
        return torch.testing.assert_close(a @ a.t(), b @ b.t(), rtol=0, atol=1e-8)

    same_span(basis[:, hidden:], top_k)  # u = [o; z]: z's coordinates get the top principal directions
    same_span(basis[:, :hidden], next_h)
    assert bool((basis[basis.abs().argmax(0), torch.arange(hidden + k)] > 0).all())
    model = LIDSVAE(30, latent_dim=k, embed_dim=3, hidden=hidden, icnn_hidden=4, beta="pca")
    with pytest.raises(RuntimeError, match="no basis yet"):
        model(x)
    model.fit_beta(x)
    torch.testing.assert_close(model.token_decoder.beta.weight().double(), basis, rtol=0, atol=1e-6)
    assert torch.isfinite(model(x)["loss"])
    with pytest.raises(ValueError, match="vocab_size >= hidden \\+ latent_dim"):
        token_pca_basis(x, 7, hidden, k)


@pytest.mark.parametrize("kind", ["svae", "lidsvae"])
def test_iwae_and_perplexity_against_quadrature(kind):
    """K = 1: log p(x) = log ∫ p(x|z) N(z; 0, 1) dz on a fine grid; IWAE(k) must approach it from below."""
    torch.manual_seed(0)
    if kind == "svae":
        model = SVAE(V, latent_dim=1, embed_dim=3, hidden=4, dropout=0.0).double().eval()
    else:
        model = LIDSVAE(V, latent_dim=1, embed_dim=3, hidden=4, dropout=0.0, icnn_hidden=5).double().eval()
    x = _batch()
    grid = torch.linspace(-9, 9, 3001, dtype=torch.float64)
    with torch.no_grad():
        ll = model.log_likelihood(x, grid.view(-1, 1, 1).expand(-1, x.shape[0], 1))  # (G, B)
    log_prior = -0.5 * (grid.square() + math.log(2 * math.pi))
    log_w = ll + log_prior.unsqueeze(1) + math.log(float(grid[1] - grid[0]))
    exact = torch.logsumexp(log_w, 0)  # Riemann sum (the integrand is smooth and negligible at ±9)
    gen = torch.Generator().manual_seed(0)
    est = iwae_log_likelihood(model, x, num_samples=20000, batch_size=4, max_tokens=1 << 17, generator=gen)
    one = iwae_log_likelihood(model, x, num_samples=1, generator=torch.Generator().manual_seed(0))
    mean, logvar = model.encode(x)
    assert float((mean.abs() + logvar.abs()).min()) > 0.1  # q is not the prior: log p(z) − log q(z|x) matters
    torch.testing.assert_close(est, exact, rtol=0, atol=0.015)
    gap = float((exact - est).mean())
    assert -0.005 < gap < 0.01 and float((exact - one).mean()) > gap + 0.05  # k = 1 is a looser bound
    ppl = perplexity(-est, x)
    brute = math.exp(-float(exact.sum()) / (4 + 2 + 7 + 3))
    assert ppl == pytest.approx(brute, rel=0.01)


def test_linear_r2():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(400, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 3, generator=g, dtype=torch.float64)
    assert linear_r2(f[:300], f[:300] @ w + 1.0, f[300:], f[300:] @ w + 1.0) == pytest.approx(1.0, abs=1e-10)
    noise = torch.randn(400, 3, generator=g, dtype=torch.float64)
    assert linear_r2(f[:300], noise[:300], f[300:], noise[300:]) < 0.1


# ----------------------------------------------------------------------------- fused vs reference
@pytest.mark.skipif(not fused_available("cpu"), reason="fused CPU kernels not built")
@pytest.mark.parametrize("beta", ["fixed", "learned", "pca"])
def test_token_decoder_fused_matches_reference(beta):
    torch.manual_seed(0)
    fused = LIDSVAE(40, latent_dim=3, embed_dim=5, hidden=6, dropout=0.0, icnn_hidden=7, beta=beta,
                    backend="fused").double()
    ref = LIDSVAE(40, latent_dim=3, embed_dim=5, hidden=6, dropout=0.0, icnn_hidden=7, beta=beta,
                  backend="reference").double()
    seqs = [torch.randint(4, 40, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (3, 9, 1, 6)]
    x = pad_sequences(seqs, 40)
    fused.fit_beta(x)
    ref.load_state_dict(fused.state_dict())
    eps = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    lf, lr = fused(x, eps)["loss"], ref(x, eps)["loss"]
    torch.testing.assert_close(lf, lr, rtol=1e-12, atol=1e-12)
    gf = torch.autograd.grad(lf, list(fused.parameters()))
    gr = torch.autograd.grad(lr, list(ref.parameters()))
    for (name, _), a, b in zip(fused.named_parameters(), gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda m: f"{name}: {m}")
    # float32 is loose
    f32, r32 = fused.float(), ref.float()
    torch.testing.assert_close(f32(x, eps.float())["loss"], r32(x, eps.float())["loss"], rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------- decoding, rebuild
@pytest.mark.parametrize("kind", ["svae", "lidsvae"])
def test_decoding_and_rebuild(kind):
    model = _models(torch.float32)[kind]
    x = _batch()
    rec = model.reconstruct(x, max_len=7)
    assert rec.shape[0] == 4 and rec.shape[1] <= 9
    check_tokens(rec, V)
    s1 = model.sample(6, generator=torch.Generator().manual_seed(3), max_len=5)
    s2 = model.sample(6, generator=torch.Generator().manual_seed(3), max_len=5)
    assert torch.equal(s1, s2)
    check_tokens(s1, V)
    # greedy decoding picks the argmax of the teacher-forced distribution at every step
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(4))
    g = model.generate(z, max_len=6, greedy=True)
    logp, mask = model.token_log_probs(g, z)
    inp, tgt = g[:, :-1], g[:, 1:]
    assert bool(mask.equal(tgt != PAD_ID))
    clone = build_model(model.config)
    assert type(clone) is type(model)
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.generate(z, max_len=6), g)
    with pytest.raises(ValueError, match=r"z must have shape \(B, 2\)"):
        model.generate(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="vocab_size >= hidden \\+ latent_dim"):
        LIDSVAE(10, latent_dim=4, hidden=8)


def test_evaluate_text_keys_and_r2():
    ds = load_text_dataset("synthetic-text", train_size=40, val_size=5, test_size=12, vocab_size=60)
    model = SVAE(60, latent_dim=3, embed_dim=4, hidden=8)
    m = evaluate_text(model, ds.test, iwae_samples=3, latents=ds.test_latents, fit_x=ds.train,
                      fit_latents=ds.train_latents)
    for key in ("active_units", "latent_dim", "iwae_nll", "ppl", "neg_elbo", "kl", "mutual_info", "latent_r2"):
        assert key in m
    assert m["ppl"] == pytest.approx(math.exp(m["iwae_nll"] * 12 / m["tokens"]))
    assert m["tokens"] == int(predicted_tokens(ds.test).sum())


def test_elbo_perplexity_by_hand():
    """elbo_ppl = exp(Σ_x −ELBO(x) / Σ_x |x|), |x| = the words and </s> of x: recomputed from a
    −ELBO estimate drawn with the same noise (the generator after the MI draw) and tokens counted
    by hand."""
    from lidvae_ext.core import metrics
    from lidvae_ext.data.text.vocab import PAD_ID as pad

    ds = load_text_dataset("synthetic-text", train_size=40, val_size=5, test_size=9, vocab_size=60)
    torch.manual_seed(0)
    model = SVAE(60, latent_dim=3, embed_dim=4, hidden=8)
    x = ds.test
    m = evaluate_text(model, x, iwae_samples=2, seed=5)
    tokens = sum(sum(1 for t in row.tolist() if t != pad) - 1 for row in x)  # minus <s>
    model.eval()
    gen = torch.Generator().manual_seed(5)
    mean, logvar = metrics.encode_dataset(model, x, 1024)
    metrics.mutual_information(mean, logvar, 1, generator=gen)
    nelbo = metrics.negative_elbo(model, x, 256, 1, generator=gen)  # mean −ELBO per sentence
    assert m["tokens"] == tokens and m["neg_elbo"] == pytest.approx(nelbo, rel=1e-12)
    assert m["elbo_ppl"] == pytest.approx(math.exp(nelbo * x.shape[0] / tokens), rel=1e-12)
    assert m["elbo_ppl"] > 1.0


# ----------------------------------------------------------------------------- CLI
def test_cli_compare_text_and_resume(tmp_path, capsys):
    from lidvae_ext.cli import main

    args = ["compare", "--data", "synthetic-text", "--train-size", "48", "--val-size", "8", "--test-size", "8",
            "--vocab-size", "80", "--latent-dim", "3", "--embed-dim", "4", "--hidden", "8", "--icnn-hidden", "6",
            "--epochs", "1", "--batch-size", "16", "--iwae-samples", "2", "--no-progress", "--threads", "1",
            "--models", "svae,lidsvae-alpha0,betasvae0.2", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert list(rep) == ["svae", "lidsvae-alpha0", "betasvae0.2"]
    for m in rep.values():
        for key in ("active_units", "latent_dim", "iwae_nll", "ppl", "neg_elbo", "kl", "mutual_info", "seconds",
                    "latent_r2"):
            assert key in m
    assert rep["lidsvae-alpha0"]["strong_convexity"] == 0.0 and rep["betasvae0.2"]["kl_weight"] == 0.2
    assert rep["lidsvae-alpha0"]["beta"] == "pca"  # the text default, fitted on the training tokens
    for f in ("report.md", "samples.txt", "kl_per_dim.png", "training_curves.png", "svae/checkpoint.pt"):
        assert (tmp_path / "run" / f).is_file(), f
    report_md = (tmp_path / "run" / "report.md").read_text()
    assert "latent R²" in report_md and "## Verdict" in report_md
    for name in rep:  # a homotopy per model: 7 decoded sentences between two test sentences
        section = report_md.split(f"## Homotopies: {name}", 1)[1].split("```")[1]
        assert section.count("  t=") == 7 and "from: " in section and "to: " in section
        assert rep[name]["unk_rate_greedy"] >= 0.0
    assert "<unk> is 0.0% of the test split's words" in (tmp_path / "run" / "samples.txt").read_text()
    assert "## Verdict" in (tmp_path / "run" / "report.html").read_text().replace("<h2>Verdict</h2>", "## Verdict")
    hist = json.loads((tmp_path / "run" / "svae" / "history.json").read_text())
    assert hist[-1]["au"] == rep["svae"]["active_units"]  # the curve's held-out AU is the table's
    capsys.readouterr()
    assert main([*args[:-2], "--out", str(tmp_path / "run"), "--resume", "--epochs", "2", "--models", "svae"]) == 0
    hist = json.loads((tmp_path / "run" / "report.json").read_text())["svae"]
    assert hist["epochs"] == 2
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\n")
    assert main(["compare", "--data", str(bad), "--out", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    assert main(["compare", "--data", "synthetic-text", "--models", "vae", "--out", str(tmp_path / "c")]) == 2
    assert "models 'vae' take images, but --data 'synthetic-text' is text data" in capsys.readouterr().err


def test_text_throughput_benchmark_runs():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "text_throughput.py"
    spec = importlib.util.spec_from_file_location("text_throughput", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--batch", "4", "--steps", "1", "--rounds", "1", "--latent-dim", "2", "--embed-dim", "4",
                    "--hidden", "8", "--icnn-hidden", "4", "--json"])
    assert out["tokens_per_round"] > 4
    assert set(out["tokens_per_s"]) >= {"svae", "lidsvae-reference"}
    assert all(v > 0 for v in out["tokens_per_s"].values())


def test_text_model_specs():
    from lidvae_ext.families import parse_model_list as parse_text_models

    specs = parse_text_models("svae,lidsvae-fixed-alpha2,lidsvae-pca,betasvae0.2")
    assert [(s.model, s.beta, s.strong_convexity, s.kl_weight) for s in specs] == [
        ("svae", None, None, 1.0), ("lidsvae", "fixed", 2.0, 1.0), ("lidsvae", "pca", None, 1.0),
        ("svae", None, None, 0.2)]
    with pytest.raises(ValueError, match="for the LID models only"):
        parse_text_models("svae-pca")
    with pytest.raises(ValueError, match="distinct"):
        parse_text_models("svae,svae")
