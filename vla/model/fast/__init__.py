"""FAST action tokens: the tokenizer (DCT + scale/round + BPE, tokenizer.py), the autoregressive
model that decodes them (model.py), and `vla tokenizer fit` (fit.py)."""
