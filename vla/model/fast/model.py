"""pi0-FAST style policy: the backbone alone decodes FAST action tokens autoregressively.

    prefix  = [image tokens][language tokens][state token]            ar = 0 (bidirectional)
    postfix = [ACT][fast tokens of the chunk ...][EOS]                 ar = 1 each (causal)
Loss: cross-entropy on the postfix (each token predicts the next). Decoding: greedy with a
KV cache, constrained to the row's embodiment's FAST ids and EOS, until EOS or
`max_action_tokens`. Each embodiment has its own FAST tokenizer (its own action dim, no
padded dims) and its own id range in the LM vocabulary, after the text vocabulary.

The tokenizers are this type's assets (vla.model.contract): fitted on the training data's
normalized chunks, saved as `fast/<embodiment>/` in the checkpoint, applied in the data
workers (`FastTargets`) and inverted inside `sample`, which reports a decode that does not
yield exactly h x a values as *malformed* (with a best-effort low-pass decode: the
coefficients that did decode, the rest zero), never a silent all-zero chunk.

Any backbone family (vla.model.backbones) decodes: the logits are its LM head (a pretrained
untied head is kept and grown with the action ids) or its tied token embedding; the state token,
[ACT] and the decoded ids take text-like positions after the prefix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from vla.model.backbones import Backbone
from vla.model.contract import COUNT_PREFIX, ActionModel, ActionSample, ModelConfig, example_inputs, int_at_least
from vla.model.fast.tokenizer import FastTokenizer, relaxed_coefficients
from vla.model.layers.attention import joint_forward, make_attn_mask
from vla.model.layers.heads import EmbodimentLinear
from vla.spec import ACTION, SpecError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FastConfig(ModelConfig):
    """FAST's own fields; the ones every model type has are ModelConfig's."""

    kind: ClassVar[str] = "fast"

    horizon: int = 10
    max_action_tokens: int = 64
    fast_vocab_size: int = 512
    fast_scale: float = 10.0

    def __post_init__(self):
        super().__post_init__()
        if not int_at_least(self.max_action_tokens, 3):
            raise SpecError(
                f"fast: max_action_tokens must be an int >= 3 ([ACT], one FAST token, [EOS]), got "
                f"{self.max_action_tokens!r}"
            )

    def example_batch(
        self, batch_size: int = 2, *, vocab_size: int = 64, seed: int = 0, fast_sizes: dict[str, int] | None = None
    ) -> dict:
        """Random model inputs with random FAST token rows ([ACT] ids... [EOS]) in each row's id range."""
        batch = example_inputs(self, batch_size, vocab_size=vocab_size, seed=seed)
        vocab = ActionVocab(vocab_size, fast_sizes or {n: self.fast_vocab_size for n in self.embodiments})
        g = np.random.default_rng(seed)
        rows = [
            fast_to_lm_row(
                list(g.integers(0, vocab.sizes[n], size=g.integers(1, self.max_action_tokens - 1))),
                vocab,
                n,
                self.max_action_tokens,
            )
            for n in batch["embodiment"]
        ]
        batch["action_tokens"] = torch.from_numpy(np.stack([r[0] for r in rows]))
        batch["action_token_mask"] = torch.from_numpy(np.stack([r[1] for r in rows]))
        return batch


class ActionVocab:
    """Where each embodiment's FAST ids live in the LM vocabulary."""

    def __init__(self, text_vocab: int, fast_sizes: dict[str, int]):
        self.offsets, base = {}, text_vocab
        for name in sorted(fast_sizes):
            self.offsets[name] = base
            base += fast_sizes[name]
        self.sizes = dict(fast_sizes)
        self.act_id, self.eos_id = base, base + 1
        self.total = base + 2

    def allowed(self, name: str, device=None) -> torch.Tensor:
        m = torch.zeros(self.total, dtype=torch.bool, device=device)
        m[self.offsets[name] : self.offsets[name] + self.sizes[name]] = True
        m[self.eos_id] = True
        return m


class FastModel(ActionModel):
    def __init__(self, cfg: FastConfig, vocab: ActionVocab, tokenizers: dict[str, FastTokenizer] | None = None):
        super().__init__()
        if not cfg.embodiments:
            raise SpecError("fast: the config names no embodiments (they come from the training data)")
        self.cfg, self.vocab, self.tokenizers = cfg, vocab, dict(tokenizers or {})
        self.text_vocab = min(vocab.offsets.values(), default=vocab.act_id)
        self.backbone = Backbone(cfg.backbone, vocab.total, lm_head=True)
        self.state_in = EmbodimentLinear(
            {k: v[0] for k, v in cfg.embodiments.items()}, self.backbone.width, direction="in"
        )

    # ---- assets: one FAST tokenizer per embodiment ----
    @classmethod
    def build(cls, cfg: FastConfig, *, text_vocab: int, assets: dict) -> "FastModel":
        tokenizers = assets.get("fast") or {}
        missing = sorted(set(cfg.embodiments) - set(tokenizers))
        if missing:
            raise SpecError(f"fast: no FAST tokenizer for embodiment(s) {missing} (have {sorted(tokenizers)})")
        return cls(cfg, ActionVocab(text_vocab, {n: t.vocab_size for n, t in tokenizers.items()}), tokenizers)

    @classmethod
    def fit_assets(cls, cfg: FastConfig, dataset, stats, norm_mode: str, *, seed: int = 0, chunks: int = 2000) -> dict:
        """One FAST tokenizer per embodiment, fit on normalized action chunks drawn from the data."""
        rng = np.random.default_rng(seed)
        out = {}
        for name in sorted(dataset.embodiments):
            idx = dataset.indices(embodiment=name)
            pick = rng.choice(idx, size=min(chunks, len(idx)), replace=False)
            x = np.stack([dataset.lowdim(int(i))[ACTION] for i in pick])
            norm = np.clip(stats[name][ACTION].normalize(x, norm_mode), -1, 1)
            out[name] = FastTokenizer.fit(norm, scale=cfg.fast_scale, vocab_size=cfg.fast_vocab_size)
        return {"fast": out}

    @classmethod
    def save_assets(cls, assets: dict, directory: Path) -> None:
        for name, tok in (assets.get("fast") or {}).items():
            tok.save(Path(directory) / "fast" / name)

    @classmethod
    def load_assets(cls, directory: Path) -> dict:
        d = Path(directory) / "fast"
        if not d.exists():
            raise SpecError(f"{directory}: a fast checkpoint needs its FAST tokenizers in fast/<embodiment>/")
        return {"fast": {p.name: FastTokenizer.load(p) for p in sorted(d.iterdir())}}

    @classmethod
    def action_targets(cls, cfg: FastConfig, assets: dict, text_vocab: int) -> "FastTargets":
        tokenizers = assets["fast"]
        vocab = ActionVocab(text_vocab, {n: t.vocab_size for n, t in tokenizers.items()})
        return FastTargets(tokenizers, vocab, cfg.max_action_tokens)

    @classmethod
    def layer_streams(cls, cfg: FastConfig) -> list[tuple[int, int]]:
        """One sequence through the backbone: prefix + state token + action tokens."""
        return [(cfg.prefix_tokens + 1 + cfg.max_action_tokens, cfg.backbone.text.width)]

    def example_batch(self, batch_size: int = 2, *, seed: int = 0) -> dict:
        return self.cfg.example_batch(batch_size, vocab_size=self.text_vocab, seed=seed, fast_sizes=self.vocab.sizes)

    def _lm(self):
        return self.backbone.language_model

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.backbone.logits(hidden)  # Gemma: tied to the token embedding

    def prefix(self, batch: dict):
        """[image tokens][language tokens][state token] (vla.model.backbones.base.Prefix)."""
        p = self.backbone.embed_prefix(batch["images"], batch["image_mask"], batch["tokens"], batch["token_mask"])
        st = self.state_in(batch["state"].to(p.embeds.dtype), batch["embodiment"])[:, None]
        return p.extend(st, torch.ones(st.shape[:2], dtype=torch.bool, device=st.device))

    def embed_prefix(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.prefix(batch)
        return p.embeds, p.valid

    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample mean cross-entropy over the postfix tokens [b]."""
        p = self.prefix(batch)
        n_prefix = p.embeds.shape[1]
        ids, id_mask = batch["action_tokens"], batch["action_token_mask"]  # [b, T]: ACT, fast ids..., EOS, pad
        full = p.extend(self.backbone.embed_tokens(ids), id_mask)
        ar = torch.cat([torch.zeros_like(p.valid, dtype=torch.long), torch.ones_like(ids)], 1)
        (out,), _ = joint_forward(
            [self._lm()],
            [full.embeds],
            make_attn_mask(full.valid, ar),
            full.positions,
            grad_checkpoint=self.cfg.grad_checkpoint and self.training,
            layer_adds=full.layer_adds,
        )
        h = out[:, n_prefix:-1]  # positions of ACT .. last-but-one predict the next token
        logits = self.logits(h).float()
        target, tmask = ids[:, 1:], id_mask[:, 1:].float()
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        return (ce * tmask).sum(1) / tmask.sum(1).clamp(min=1)

    def _sample(self, batch: dict, *, num_steps, noise, guide, guide_weights) -> ActionSample:
        """Greedy decode, then FAST tokens -> normalized actions [b, h, a_max] and malformed rows [b].
        num_steps and noise do not apply; guided (RTC) sampling is pi0's, FAST decodes unguided."""
        if guide is not None:
            log.debug("guided (RTC) sampling is not supported by FAST; decoding unguided")
        names = batch["embodiment"]
        missing = sorted(set(names) - set(self.tokenizers))
        if missing:
            raise SpecError(
                f"fast: no FAST tokenizer for embodiment(s) {missing}; this model has {sorted(self.tokenizers)}"
            )
        norm, bad = [], []
        for seq, n in zip(self.generate(batch), names):
            tok = self.tokenizers[n]
            ids = lm_ids_to_fast(seq, self.vocab, n)
            r = tok.decode(ids)
            if r.ok:
                norm.append(r.actions)
            else:
                acts, got = relaxed_coefficients(tok, ids)
                log.warning(
                    "malformed FAST decode for %s: %d values, expected %d; using a low-pass decode",
                    n,
                    got,
                    tok.horizon * tok.action_dim,
                )
                norm.append(acts)
            bad.append(not r.ok)
        out = np.zeros((len(norm), self.cfg.horizon, max(x.shape[1] for x in norm)), np.float32)
        for i, x in enumerate(norm):
            out[i, :, : x.shape[1]] = x
        return ActionSample(torch.from_numpy(out), torch.tensor(bad, dtype=torch.bool))

    @torch.inference_mode()
    def generate(self, batch: dict, max_new: int | None = None) -> list[list[int]]:
        """Greedy decoding with a KV cache -> per row the generated LM ids (EOS excluded)."""
        emb = batch["embodiment"]
        b = len(emb)
        max_new = max_new or self.cfg.max_action_tokens - 1
        p = self.prefix(batch)
        act = self.backbone.embed_tokens(torch.full((b, 1), self.vocab.act_id, device=p.embeds.device))
        p = p.extend(act, torch.ones(b, 1, dtype=torch.bool, device=act.device))
        x, valid = p.embeds, p.valid
        ar = torch.zeros(valid.shape, dtype=torch.long, device=x.device)
        ar[:, -1] = 1
        (out,), cache = joint_forward(
            [self._lm()], [x], make_attn_mask(valid, ar), p.positions, keep_kv=True, layer_adds=p.layer_adds
        )
        allowed = torch.stack([self.vocab.allowed(n, x.device) for n in emb])
        pos = p.next_pos
        seqs: list[list[int]] = [[] for _ in range(b)]
        done = torch.zeros(b, dtype=torch.bool, device=x.device)
        h = out[:, -1]
        for _ in range(max_new):
            logits = self.logits(h).masked_fill(~allowed, float("-inf"))
            nxt = logits.argmax(-1)
            for i in range(b):
                if not done[i] and int(nxt[i]) != self.vocab.eos_id:
                    seqs[i].append(int(nxt[i]))
            done |= nxt == self.vocab.eos_id
            if bool(done.all()):
                break
            e = self.backbone.embed_tokens(nxt[:, None]).to(x.dtype)
            valid = torch.cat([valid, torch.ones(b, 1, dtype=torch.bool, device=x.device)], 1)
            allowed_k = valid[:, None, :]  # the new token sees every real token so far
            (out,), cache = joint_forward([self._lm()], [e], allowed_k, pos[:, None], past=cache, keep_kv=True)
            pos = pos + 1
            h = out[:, -1]
        return seqs


def lm_ids_to_fast(ids: list[int], vocab: ActionVocab, name: str) -> list[int]:
    off, size = vocab.offsets[name], vocab.sizes[name]
    return [i - off for i in ids if off <= i < off + size]


def fast_to_lm_row(
    fast_ids: list[int], vocab: ActionVocab, name: str, max_len: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """[ACT] + ids + [EOS], padded to max_len -> (ids, mask, truncated)."""
    seq = [vocab.act_id] + [vocab.offsets[name] + i for i in fast_ids] + [vocab.eos_id]
    truncated = len(seq) > max_len
    seq = seq[:max_len]
    out = np.zeros(max_len, np.int64)
    mask = np.zeros(max_len, bool)
    out[: len(seq)] = seq
    mask[: len(seq)] = True
    return out, mask, truncated


class FastTargets:
    """Worker-side training targets: normalized chunks -> [ACT] + FAST ids + [EOS] rows.

    Also counts the sequences cut at max_action_tokens (`count/fast_truncated`, a batch key the
    trainer sums in the main process, so the count survives DataLoader worker processes)."""

    def __init__(self, tokenizers: dict[str, FastTokenizer], vocab: ActionVocab, max_len: int):
        self.tokenizers, self.vocab, self.max_len = tokenizers, vocab, max_len

    def __call__(self, names: list[str], actions: np.ndarray) -> dict:
        rows, masks, truncated = [], [], 0
        for i, n in enumerate(names):
            tok = self.tokenizers[n]
            r, m, cut = fast_to_lm_row(tok.encode(actions[i, :, : tok.action_dim]), self.vocab, n, self.max_len)
            rows.append(r)
            masks.append(m)
            truncated += int(cut)
        return {
            "action_tokens": torch.from_numpy(np.stack(rows)),
            "action_token_mask": torch.from_numpy(np.stack(masks)),
            COUNT_PREFIX + "fast_truncated": torch.tensor(truncated),
        }


FastPolicy = FastModel  # the name before model types got one contract (vla.model.contract)
