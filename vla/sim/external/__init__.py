"""Adapters that give external simulation suites (Meta-World, ALOHA sim) the built-in envs' interface:
the same observation keys, an Embodiment, `info["success"]`, a scripted expert, small images, no shadows.
"""
