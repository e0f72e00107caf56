import pytest

from vla.data import EpisodeStore
from vla.data.synthetic import write_synthetic

from helpers import tiny_embodiment

TINY_PRESET = """
type = "{kind}"
norm_mode = "{norm}"
[model]
horizon = 6
cameras = 2
max_tokens = 6
{extra}
[model.backbone]
image_size = 32
patch_size = 16
vision_width = 32
vision_depth = 1
vision_heads = 2
vision_mlp = 64
vocab_size = 64
text = {{ width = 32, depth = 2, mlp = 64, heads = 2, kv_heads = 1, head_dim = 16 }}
{expert}
[text]
vocab_size = 300
[train]
steps = 6
batch_size = 4
lr = 1e-3
warmup = 2
workers = 0
log_every = 1
"""
PI0_EXPERT = "[model.expert]\nwidth = 16\ndepth = 2\nmlp = 32\nheads = 2\nkv_heads = 1\nhead_dim = 16\n"


def write_preset(path, kind="pi0"):
    text = TINY_PRESET.format(
        kind=kind,
        norm="zscore" if kind == "pi0" else "quantile",
        expert=PI0_EXPERT if kind == "pi0" else "",
        extra="num_steps = 3" if kind == "pi0" else "max_action_tokens = 40\nfast_vocab_size = 300\nfast_scale = 4.0",
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def two_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    paths = []
    for name, (s, a, cams) in {
        "armA": (4, 3, (("front", 16, 16), ("wrist", 16, 16))),
        "armB": (6, 5, (("front", 20, 16),)),
    }.items():
        emb = tiny_embodiment(name, s=s, a=a, cams=cams)
        store = EpisodeStore.create(root / name, [emb])
        write_synthetic(store, emb, episodes=4, length=12, seed=len(paths))
        paths.append(str(root / name))
    return paths
