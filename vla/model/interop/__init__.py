"""Weights in and out: checkpoint directories (checkpoint.py), loading with one copy of the weights
(weight_io.py), key layouts of other projects (layout.py), `vla convert` (convert.py), `vla
export-weights` (export.py); both writers fill a directory all at once (atomic.py)."""
