"""`vla bench peers`: vla beside LeRobot's own ACT and Diffusion Policy on public suites (ALOHA sim,
Meta-World MT10): the same demos, the same CPU-minutes, the same held-out seeds and harness.

bench.py runs it; lerobot_side.py is LeRobot's side (run by the Python of a LeRobot environment,
venv.py finds or makes one); adapter.py drives a served peer as a vla policy over wire.py's frames;
report.py writes the table and the curves.
"""

from vla.bench.peers.bench import run

__all__ = ["run"]
