from vla.model.backbones.config import BackboneConfig, GemmaSize
from vla.model.pi0.model import Pi0Config


def tiny_backbone(**kw) -> BackboneConfig:
    d = dict(
        image_size=32,
        patch_size=16,
        vision_width=32,
        vision_depth=1,
        vision_heads=2,
        vision_mlp=64,
        text=GemmaSize(width=32, depth=2, mlp=64, heads=2, kv_heads=1, head_dim=16),
        vocab_size=64,
    )
    d.update(kw)
    return BackboneConfig(**d)


def tiny_pi0(embodiments=None, **kw) -> Pi0Config:
    d = dict(
        backbone=tiny_backbone(),
        expert=GemmaSize(width=16, depth=2, mlp=32, heads=2, kv_heads=1, head_dim=16),
        horizon=6,
        num_steps=4,
        cameras=2,
        max_tokens=5,
        embodiments=embodiments or {"a": (3, 2), "b": (5, 4)},
    )
    d.update(kw)
    return Pi0Config(**d)
