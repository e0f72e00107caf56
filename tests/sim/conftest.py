import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco
