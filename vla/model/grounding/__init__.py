"""From-scratch research components that pi0 and pi0.5 take by composition (Pi0Config.grounding;
None is the model as published): grounding tokens and the env-state auxiliary loss (tokens.py),
the instruction-conditioned keypoint stem (keypoints.py)."""
