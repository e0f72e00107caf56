"""Weights in and out: checkpoint directories (checkpoint.py), loading with one copy of the weights
(weight_io.py), key layouts of other projects (layout.py), `vla convert` (convert.py) and `vla
export-weights` (export.py)."""
