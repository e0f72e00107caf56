import numpy as np
import pytest
import torch
from scipy.fft import dct

from vla.model.fast.model import ActionVocab, FastConfig, FastPolicy, fast_to_lm_row, lm_ids_to_fast
from vla.model.fast.tokenizer import FastTokenizer, relaxed_coefficients
from vla.spec import SpecError

from model.tiny_configs import tiny_backbone


def smooth_chunks(n, h=20, a=3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, h)[None, :, None]
    return np.clip(
        np.sin(2 * np.pi * rng.uniform(0.2, 1.0, (n, 1, a)) * t + rng.uniform(0, 6, (n, 1, a)))
        * rng.uniform(0.2, 0.9, (n, 1, a)),
        -1,
        1,
    )


def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix D [n, n] the tokenizer multiplied by before scipy.fft:
    coeffs = D @ x, x = D.T @ coeffs."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


def test_dct_is_orthonormal():
    d = dct_matrix(17)
    np.testing.assert_allclose(d @ d.T, np.eye(17), atol=1e-12)


@pytest.mark.parametrize("h", [1, 2, 10, 17, 50])
def test_scipy_dct_matches_the_old_matrix(h):
    """scipy.fft's orthonormal DCT-II / inverse give the old matrix products (within 1e-6) and
    the same integer coefficients, so a fitted tokenizer encodes and decodes as before."""
    x = smooth_chunks(200, h=h, a=4, seed=h)
    tok = FastTokenizer(h, 4, scale=10.0, min_int=-100, max_int=100, tok=None)
    d = dct_matrix(h)
    old_ints = np.round(np.einsum("kt,...ta->...ka", d, x) * 10.0).astype(np.int64)
    ints = tok._to_ints(x)
    assert np.array_equal(ints, old_ints)
    for row in ints[:20]:
        np.testing.assert_allclose(tok._from_ints(row), (d.T @ (row / 10.0)).astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(dct(x, type=2, norm="ortho", axis=-2), np.einsum("kt,...ta->...ka", d, x), atol=1e-6)


def test_fit_encode_decode_roundtrip_and_report(tmp_path):
    x = smooth_chunks(300)
    tok = FastTokenizer.fit(x, scale=10, vocab_size=256)
    ids = tok.encode(x[0])
    r = tok.decode(ids)
    assert r.ok and r.actions.shape == (20, 3)
    assert np.abs(r.actions - x[0]).max() < 0.15  # lossy: rounding at scale 10
    rep = tok.report(x[:50])
    assert rep["compression"] > 1.5 and rep["roundtrip_failures"] == 0 and rep["roundtrip_mae"] < 0.05
    tok.save(tmp_path / "t")
    back = FastTokenizer.load(tmp_path / "t")
    assert back.encode(x[1]) == tok.encode(x[1])


def test_malformed_decode_is_reported_not_zeroed():
    x = smooth_chunks(200)
    tok = FastTokenizer.fit(x, scale=10, vocab_size=256)
    ids = tok.encode(x[3])
    r = tok.decode(ids[:-2])
    assert not r.ok and r.actions is None and 0 < r.values < 60
    acts, got = relaxed_coefficients(tok, ids[:-2])
    assert got == r.values and np.abs(acts).sum() > 0
    assert np.abs(acts - x[3]).mean() < np.abs(x[3]).mean()  # a low-pass version, closer than zeros
    with pytest.raises(SpecError, match="vocab_size 4 is smaller"):
        FastTokenizer.fit(x, vocab_size=4)


def test_fast_policy_learns_and_decodes_with_cache():
    torch.manual_seed(0)
    x = smooth_chunks(64, h=8, a=2)
    tok = FastTokenizer.fit(x, scale=4, vocab_size=64)
    vocab = ActionVocab(64, {"r": tok.vocab_size})
    cfg = FastConfig(
        backbone=tiny_backbone(vocab_size=vocab.total),
        horizon=8,
        cameras=1,
        max_tokens=4,
        max_action_tokens=40,
        embodiments={"r": (3, 2)},
    )
    m = FastPolicy(cfg, vocab)
    b = 2
    rows = [fast_to_lm_row(tok.encode(x[i]), vocab, "r", 40) for i in range(b)]
    batch = {
        "images": torch.rand(b, 1, 3, 32, 32) * 2 - 1,
        "image_mask": torch.ones(b, 1, dtype=torch.bool),
        "tokens": torch.randint(4, 60, (b, 4)),
        "token_mask": torch.ones(b, 4, dtype=torch.bool),
        "state": torch.randn(b, 3),
        "embodiment": ["r"] * b,
        "action_tokens": torch.from_numpy(np.stack([r[0] for r in rows])),
        "action_token_mask": torch.from_numpy(np.stack([r[1] for r in rows])),
    }
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(150):
        loss = m.compute_loss(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    m.eval()
    seqs = m.generate(batch)
    for i in range(b):  # memorized: greedy decoding with the KV cache reproduces the target tokens
        assert lm_ids_to_fast(seqs[i], vocab, "r") == tok.encode(x[i])
        assert tok.decode(lm_ids_to_fast(seqs[i], vocab, "r")).ok


def test_fast_model_sample_decodes_inside_and_flags_malformed_rows():
    torch.manual_seed(0)
    x = smooth_chunks(64, h=8, a=2)
    tok = FastTokenizer.fit(x, scale=4, vocab_size=64)
    cfg = FastConfig(
        backbone=tiny_backbone(vocab_size=64),
        horizon=8,
        cameras=1,
        max_tokens=4,
        max_action_tokens=40,
        embodiments={"r": (3, 2)},
    )
    m = FastPolicy.build(cfg, text_vocab=64, assets={"fast": {"r": tok}}).eval()
    batch = m.example_batch(2)
    good, cut = tok.encode(x[0]), tok.encode(x[1])[:-2]
    m.generate = lambda batch: [[m.vocab.offsets["r"] + i for i in ids] for ids in (good, cut)]
    out = m.sample(batch)
    assert out.malformed.tolist() == [False, True]
    np.testing.assert_allclose(out.actions[0].numpy(), tok.decode(good).actions, atol=1e-6)
    assert out.actions[1].abs().sum() > 0  # the malformed row is a best-effort decode, not zeros
    with pytest.raises(SpecError, match="no FAST tokenizer"):
        FastPolicy.build(cfg, text_vocab=64, assets={"fast": {}})
