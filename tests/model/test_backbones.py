"""Backbone adapters against transformers: for each family a tiny model saved with `save_pretrained`
loads through the adapter from the local dir, and the adapter's image tokens, text embeddings,
positions and per-layer prefix keys/values equal the transformers model's own forward."""

import json
from dataclasses import replace

import pytest
import torch
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

from vla.model.backbones import BACKBONES, Backbone
from vla.model.backbones.config import FAMILIES, BackboneConfig, GemmaSize
from vla.model.backbones.qwen_vl import patchify
from vla.model.layers.attention import joint_forward, make_attn_mask
from vla.spec import SpecError

V = 120  # vocabulary of the tiny models; the image placeholder id is V - 1
EXTRA = {
    "paligemma": {},
    "smolvlm": dict(token_merge=2, rope_theta=1e5),
    "qwen2_5_vl": dict(token_merge=2, rope_theta=1e6),
    "qwen3_vl": dict(token_merge=2, deepstack=(0, 1)),
    "qwen3_vl_moe": dict(token_merge=2, deepstack=(0,), moe_experts=4, moe_top_k=2, moe_mlp=32),
}


def tiny(family: str, **kw) -> BackboneConfig:
    d = dict(
        family=family,
        image_size=32,
        patch_size=8,
        vision_width=32,
        vision_depth=2,
        vision_heads=2,
        vision_mlp=64,
        text=GemmaSize(width=64, depth=3, mlp=96, heads=4, kv_heads=2, head_dim=16),
        vocab_size=V,
        **EXTRA[family],
    )
    d.update(kw)
    return BackboneConfig(**d)


def hf_model(cfg: BackboneConfig):
    """A transformers ForConditionalGeneration of the family at cfg's sizes (random weights)."""
    if cfg.family == "paligemma":
        vis = SiglipVisionConfig(
            hidden_size=cfg.vision_width,
            intermediate_size=cfg.vision_mlp,
            num_hidden_layers=cfg.vision_depth,
            num_attention_heads=cfg.vision_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            vision_use_head=False,
        )
        c = PaliGemmaConfig(
            vision_config=vis.to_dict(),
            text_config=cfg.text.gemma_config(V).to_dict(),
            image_token_index=V - 1,
            projection_dim=cfg.text.width,
            hidden_size=cfg.text.width,
            vocab_size=V,
        )
        return PaliGemmaForConditionalGeneration(c).eval()
    adapter = BACKBONES[cfg.family](cfg, V)
    full_cls = PaliGemmaForConditionalGeneration
    if cfg.family == "smolvlm":
        from transformers import SmolVLMForConditionalGeneration as full_cls
    else:
        full_cls = adapter.hf_classes()[2]
    return full_cls(adapter.hf_config(V)).eval()


def hf_inputs(hf, family: str, images: torch.Tensor, ids: torch.Tensor, per: int, cfg: BackboneConfig):
    """transformers' inputs for [image tokens of each camera][text] and its image features [b, c * per, d]."""
    b, c = images.shape[:2]
    img_id = V - 1
    input_ids = torch.cat([torch.full((b, c * per), img_id), ids], 1)
    core = hf.model
    if family == "paligemma":
        pix = images.flatten(0, 1)
        feats = core.get_image_features(pix).pooler_output
        # transformers' PaliGemma counts positions from 1 by default; pi0 (openpi, and vla) from 0
        pos = torch.arange(input_ids.shape[1])[None].expand(b, -1)
        return dict(
            input_ids=input_ids, pixel_values=pix, token_type_ids=torch.zeros_like(input_ids), position_ids=pos
        ), feats
    if family == "smolvlm":
        return dict(input_ids=input_ids, pixel_values=images), torch.cat(core.get_image_features(images).pooler_output)
    # Qwen-VL: the image processor's patches; positions from the model's own get_vision_position_ids, the
    # cameras back to back (get_rope_index would take adjacent images for one group), then 1D text.
    g = cfg.image_size // cfg.patch_size
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    x01 = (images.flatten(0, 1) + 1) / 2
    pix = patchify((x01 - mean[:, None, None]) / std[:, None, None], cfg.patch_size, cfg.token_merge).flatten(0, 1)
    grid = torch.tensor([[1, g, g]] * (b * c))
    start, blocks = 0, []
    for i in range(c):
        blocks.append(core.get_vision_position_ids(start, grid[i], 1, cfg.token_merge))
        start += g // cfg.token_merge
    blocks.append(torch.arange(ids.shape[1]).view(1, -1).expand(3, -1) + start)
    pos = torch.cat(blocks, 1)[:, None].expand(3, b, -1)
    feats = torch.cat(core.get_image_features(pix, grid).pooler_output)
    return dict(
        input_ids=input_ids,
        pixel_values=pix,
        image_grid_thw=grid,
        position_ids=pos,
        mm_token_type_ids=(input_ids == img_id).int(),
    ), feats


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_equals_transformers_forward(family, tmp_path):
    torch.manual_seed(0)
    cfg = tiny(family)
    hf = hf_model(cfg)
    hf.save_pretrained(tmp_path)
    ad = Backbone(replace(cfg, pretrained=str(tmp_path)), V).eval()
    b, c, n_txt = 2, 2, 5
    images = torch.rand(b, c, 3, cfg.image_size, cfg.image_size) * 2 - 1
    ids = torch.randint(1, V - 5, (b, n_txt))
    with torch.no_grad():
        p = ad.embed_prefix(images, torch.ones(b, c, dtype=torch.bool), ids, torch.ones(b, n_txt, dtype=torch.bool))
        per = cfg.tokens_per_image
        assert p.embeds.shape == (b, c * per + n_txt, cfg.text.width)
        kw, feats = hf_inputs(hf, family, images, ids, per, cfg)
        torch.testing.assert_close(p.embeds[:, : c * per], feats.reshape(b, c * per, -1), rtol=0, atol=1e-6)
        torch.testing.assert_close(ad.embed_tokens(ids), hf.get_input_embeddings()(ids), rtol=0, atol=0)
        if "position_ids" in kw:
            assert torch.equal(p.positions, kw["position_ids"])
        out = hf.model(**kw, use_cache=True)
        # PaliGemma's prefix is bidirectional (token_type_ids 0), the others' causal: the same mask here.
        ar = (
            torch.zeros_like(p.valid, dtype=torch.long)
            if family == "paligemma"
            else torch.ones_like(p.valid, dtype=torch.long)
        )
        (h,), kv = joint_forward(
            [ad.language_model],
            [p.embeds],
            make_attn_mask(p.valid, ar),
            p.positions,
            keep_kv=True,
            layer_adds=p.layer_adds,
        )
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    assert len(kv) == cfg.text.depth
    for li, (k, v) in enumerate(kv):
        torch.testing.assert_close(k, cache.layers[li].keys, rtol=0, atol=1e-5)
        torch.testing.assert_close(v, cache.layers[li].values, rtol=0, atol=1e-5)
    torch.testing.assert_close(h, out.last_hidden_state, rtol=0, atol=1e-5)
    if family.startswith("qwen3_vl"):  # DeepStack reaches the decoder: without it layer 1 differs
        with torch.no_grad():
            _, kv0 = joint_forward(
                [ad.language_model], [p.embeds], make_attn_mask(p.valid, ar), p.positions, keep_kv=True
            )
        assert not torch.allclose(kv0[1][0], kv[1][0])


def test_pretrained_dir_keeps_the_first_layers_and_checks_sizes(tmp_path):
    """SmolVLA's 'first N VLM layers': a 3-layer checkpoint under a 2-layer preset keeps layers 0-1."""
    torch.manual_seed(0)
    cfg = tiny("smolvlm")
    hf = hf_model(cfg)
    hf.save_pretrained(tmp_path)
    ad = Backbone(replace(cfg, pretrained=str(tmp_path), text=replace(cfg.text, depth=2)), V)
    assert len(ad.language_model.layers) == 2
    torch.testing.assert_close(
        ad.language_model.layers[1].mlp.up_proj.weight, hf.model.text_model.layers[1].mlp.up_proj.weight
    )
    with pytest.raises(SpecError, match="4 .*decoder layers|decoder layers, the preset uses 4"):
        Backbone(replace(cfg, pretrained=str(tmp_path), text=replace(cfg.text, depth=4)), V)
    with pytest.raises(SpecError, match=r"decoder \{'width': 64.*!= preset \{'width': 32"):
        Backbone(replace(cfg, pretrained=str(tmp_path), text=replace(cfg.text, width=32)), V)
    with pytest.raises(SpecError, match="pixel shuffle 2 != preset token_merge 4"):
        Backbone(replace(cfg, pretrained=str(tmp_path), token_merge=4, image_size=64), V)
    # FAST grows the vocabulary and keeps SmolVLM's untied LM head, grown too.
    fast = Backbone(replace(cfg, pretrained=str(tmp_path)), V + 7, lm_head=True)
    assert fast.language_model.embed_tokens.num_embeddings == V + 7 and fast.lm_head.out_features == V + 7
    torch.testing.assert_close(fast.lm_head.weight[:V], hf.lm_head.weight)


def test_a_dir_of_another_family_is_refused_naming_it(tmp_path):
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(
        SpecError, match=r"holds a 'llava' model; supported backbone families: \['paligemma', 'smolvlm'"
    ):
        Backbone(tiny("smolvlm", pretrained=str(tmp_path / "llava")), V)
    hf_model(tiny("smolvlm")).save_pretrained(tmp_path / "smol")
    with pytest.raises(SpecError, match="holds a 'smolvlm' model but the preset's backbone.family is 'qwen2_5_vl'"):
        Backbone(tiny("qwen2_5_vl", pretrained=str(tmp_path / "smol")), V)
    with pytest.raises(SpecError, match="has no config.json"):
        Backbone(tiny("qwen2_5_vl", pretrained=str(tmp_path / "nothing")), V)
    with pytest.raises(SpecError, match=r"unknown family 'llava'; supported: \['paligemma'"):
        BackboneConfig(family="llava")


def test_config_checks_name_expected_and_actual():
    with pytest.raises(SpecError, match="not a multiple of token_merge 4"):
        tiny("smolvlm", token_merge=4, image_size=48)
    with pytest.raises(SpecError, match="width = heads \\* head_dim: expected 64, got width 48"):
        tiny("qwen2_5_vl", text=GemmaSize(width=48, depth=2, mlp=96, heads=4, kv_heads=2, head_dim=16))
    with pytest.raises(SpecError, match="moe_experts/moe_top_k/moe_mlp are for family 'qwen3_vl_moe'"):
        tiny("qwen3_vl", moe_experts=4)
    with pytest.raises(SpecError, match="deepstack layers \\[5\\] must be vision layers"):
        tiny("qwen3_vl", deepstack=(5,))
    with pytest.raises(SpecError, match="paligemma has no token merge"):
        tiny("paligemma", token_merge=2)


def test_multimodal_positions_skip_a_missing_camera():
    """A missing camera takes no positions: the next block (and the text) start where it would have."""
    ad = Backbone(tiny("qwen2_5_vl"), V)
    g = 2  # 4 x 4 patches, merged 2 x 2
    pos, nxt = ad.prefix_positions(
        torch.tensor([[True, True], [False, True]]), g * g, torch.ones(2, 3, dtype=torch.bool)
    )
    assert pos[:, 0, 4:8].tolist() == [[2, 2, 2, 2], [2, 2, 3, 3], [2, 3, 2, 3]]  # camera 2 of row 0 starts at g
    assert pos[:, 1, 4:8].tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1]]  # row 1: it is the first
    assert pos[0, :, 8:].tolist() == [[4, 5, 6], [2, 3, 4]] and nxt.tolist() == [7, 5]


def test_qwen_patches_equal_the_image_processor():
    """Camera frames ([-1, 1], as vla's transforms give them) -> the same flattened patches as
    transformers' Qwen2-VL image processor makes from the uint8 frame."""
    import numpy as np
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    ad = Backbone(tiny("qwen2_5_vl"), V)
    proc = Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2, do_resize=False)
    frame = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    want = proc(images=[frame], return_tensors="pt")
    x = torch.from_numpy(frame).permute(2, 0, 1).float()[None] / 127.5 - 1
    assert want["image_grid_thw"].tolist() == [[1, 4, 4]]
    torch.testing.assert_close(patchify(ad.normalize(x), 8, 2)[0], want["pixel_values"], rtol=0, atol=1e-6)
