"""Text tokenizer: a byte-level BPE trained offline on the dataset's instructions.

Byte-level, so any instruction encodes (unseen words fall back to bytes). Saved as one
`tokenizer.json` inside the checkpoint; a pretrained backbone's own `tokenizer.json` can be
loaded instead (`TextTokenizer.load(dir)`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from vla.spec import SpecError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = [PAD, BOS, EOS, UNK]


class TextTokenizer:
    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.pad_id = tok.token_to_id(PAD) if tok.token_to_id(PAD) is not None else 0
        self.bos_id = tok.token_to_id(BOS)

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 512) -> "TextTokenizer":
        if not texts:
            raise SpecError("text tokenizer: no instructions to train on")
        tok = Tokenizer(models.BPE(unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=1,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(sorted(set(texts)), trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> "TextTokenizer":
        p = Path(path)
        p = p / "tokenizer.json" if p.is_dir() else p
        if not p.exists():
            raise SpecError(f"text tokenizer not found: {p}")
        return cls(Tokenizer.from_file(str(p)))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, texts: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """-> ids [b, max_len] int64, mask [b, max_len] bool (BOS first; truncated at max_len)."""
        ids = np.full((len(texts), max_len), self.pad_id, np.int64)
        mask = np.zeros((len(texts), max_len), bool)
        for i, enc in enumerate(self.tok.encode_batch(list(texts), add_special_tokens=False)):  # BOS is ours
            seq = ([self.bos_id] if self.bos_id is not None else []) + enc.ids
            seq = seq[:max_len]
            ids[i, : len(seq)] = seq
            mask[i, : len(seq)] = True
        return ids, mask
