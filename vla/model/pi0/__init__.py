"""pi0 and pi0.5: the flow-matching action expert attached to a VLM backbone (model.py), pi0.5's
adaptive-norm time conditioning (pi05.py)."""
