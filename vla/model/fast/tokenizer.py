"""FAST action tokenizer: DCT-II along time, scale and round, then BPE.

    chunk [h, a] (quantile-normalized, clipped to [-1, 1])
      -> DCT-II (orthonormal) along time, per dim         coefficients [h, a]
      -> round(coeff * scale)                             ints
      -> flatten row-major (all dims' lowest frequency first)
      -> one character per int (offset into a private code range, no surrogates)
      -> byte-pair encoding trained on the dataset's chunks -> token ids
Decoding inverts each step. A token sequence that does not decode to exactly h * a ints is
*malformed*: `decode` reports it (ok=False, with how many values it got) instead of
returning zeros; callers decide what to do (the runtime keeps the previous plan).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.fft import dct, idct
from tokenizers import Tokenizer, models, trainers

from vla.spec import SpecError

CHAR_BASE = 0x4E00  # CJK block: 20k printable code points, far from the surrogate range


@dataclass
class DecodeResult:
    actions: np.ndarray | None  # [h, a] when ok
    ok: bool
    values: int  # how many ints the tokens decoded to (h * a when ok)


class FastTokenizer:
    def __init__(self, horizon: int, action_dim: int, scale: float, min_int: int, max_int: int, tok: Tokenizer):
        self.horizon, self.action_dim, self.scale = horizon, action_dim, scale
        self.min_int, self.max_int, self.tok = min_int, max_int, tok

    # ---- ints <-> chunks ----
    def _to_ints(self, chunks: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(chunks, np.float64), -1.0, 1.0)
        coeff = dct(x, type=2, norm="ortho", axis=-2)  # along time: [..., h, a]
        return np.round(coeff * self.scale).astype(np.int64)

    def _from_ints(self, ints: np.ndarray) -> np.ndarray:
        coeff = ints.reshape(self.horizon, self.action_dim) / self.scale
        return idct(coeff, type=2, norm="ortho", axis=0).astype(np.float32)

    def _to_text(self, ints: np.ndarray) -> str:
        clipped = np.clip(ints.reshape(-1), self.min_int, self.max_int)
        return "".join(chr(CHAR_BASE + int(v - self.min_int)) for v in clipped)

    # ---- fit / encode / decode ----
    @classmethod
    def fit(
        cls, chunks: np.ndarray, *, scale: float = 10.0, vocab_size: int = 1024, min_frequency: int = 2
    ) -> "FastTokenizer":
        """chunks [n, h, a] normalized actions."""
        chunks = np.asarray(chunks)
        if chunks.ndim != 3 or len(chunks) == 0:
            raise SpecError(f"FAST fit: expected chunks [n, h, a], got shape {chunks.shape}")
        n, h, a = chunks.shape
        probe = cls(h, a, scale, 0, 0, Tokenizer(models.BPE()))
        ints = probe._to_ints(chunks)
        lo, hi = int(ints.min()), int(ints.max())
        alphabet = [chr(CHAR_BASE + v) for v in range(hi - lo + 1)]
        if vocab_size < len(alphabet):
            raise SpecError(
                f"FAST fit: vocab_size {vocab_size} is smaller than the {len(alphabet)} distinct "
                f"quantized values; raise vocab_size or lower scale ({scale})"
            )
        tok = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=alphabet,
            max_token_length=10_000,
            show_progress=False,
        )
        fast = cls(h, a, scale, lo, hi, tok)
        tok.train_from_iterator((fast._to_text(x) for x in ints), trainer=trainer, length=n)
        return fast

    def encode(self, chunk: np.ndarray) -> list[int]:
        return self.tok.encode(self._to_text(self._to_ints(chunk[None])[0])).ids

    def decode(self, ids: list[int]) -> DecodeResult:
        text = "".join(self.tok.id_to_token(int(i)) or "" for i in ids)
        vals = [ord(c) - CHAR_BASE + self.min_int for c in text]
        n = self.horizon * self.action_dim
        if len(vals) != n or any(not self.min_int <= v <= self.max_int for v in vals):
            return DecodeResult(None, False, len(vals))
        return DecodeResult(self._from_ints(np.asarray(vals)), True, n)

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def report(self, chunks: np.ndarray) -> dict:
        """Tokens per chunk, compression vs one token per (step, dim), round-trip error."""
        lengths, errs, bad = [], [], 0
        for c in chunks:
            ids = self.encode(c)
            lengths.append(len(ids))
            r = self.decode(ids)
            if not r.ok:
                bad += 1
                continue
            errs.append(np.abs(r.actions - np.clip(c, -1, 1)).mean())
        per_step = self.horizon * self.action_dim
        return {
            "chunks": len(chunks),
            "tokens_per_chunk_mean": float(np.mean(lengths)),
            "tokens_per_chunk_max": int(np.max(lengths)),
            "per_step_binning_tokens": per_step,
            "compression": float(per_step / np.mean(lengths)),
            "roundtrip_mae": float(np.mean(errs)) if errs else None,
            "roundtrip_failures": bad,
            "vocab_size": self.vocab_size,
            "scale": self.scale,
        }

    # ---- persistence ----
    def save(self, d: str | Path) -> None:
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(d / "fast_bpe.json"))
        (d / "fast.json").write_text(
            json.dumps(
                {
                    "horizon": self.horizon,
                    "action_dim": self.action_dim,
                    "scale": self.scale,
                    "min_int": self.min_int,
                    "max_int": self.max_int,
                },
                indent=1,
            )
        )

    @classmethod
    def load(cls, d: str | Path) -> "FastTokenizer":
        d = Path(d)
        if not (d / "fast.json").exists():
            raise SpecError(f"no FAST tokenizer in {d} (missing fast.json)")
        meta = json.loads((d / "fast.json").read_text())
        return cls(
            meta["horizon"],
            meta["action_dim"],
            meta["scale"],
            meta["min_int"],
            meta["max_int"],
            Tokenizer.from_file(str(d / "fast_bpe.json")),
        )


def relaxed_coefficients(tok: FastTokenizer, ids: list[int]) -> tuple[np.ndarray, int]:
    """Best-effort decode of a malformed sequence: the ints it does decode, as the lowest-frequency
    coefficients; missing ones are zero (a low-pass version of the plan), extra ones dropped.
    Returns (actions [h, a], number of ints decoded)."""
    text = "".join(tok.tok.id_to_token(int(i)) or "" for i in ids)
    vals = [min(max(ord(c) - CHAR_BASE + tok.min_int, tok.min_int), tok.max_int) for c in text]
    n = tok.horizon * tok.action_dim
    full = np.zeros(n, np.int64)
    full[: min(n, len(vals))] = vals[:n]
    return tok._from_ints(full), len(vals)
