"""Building blocks shared by the model types: attention with the prefix KV cache and fused
inference layers, cross-attention (SmolVLA-style attachment), adaptive RMS norm (pi0.5), per-
embodiment heads, position tables."""
