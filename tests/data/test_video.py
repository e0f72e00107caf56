"""vla.data.video: the AV1 writer leaves the caller's scheduling as it found it."""

import os
import subprocess
import sys

import numpy as np
import pytest

from vla.data.video import VideoCursor, VideoWriter


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="no POSIX scheduling API here")
def test_av1_encoding_leaves_the_thread_and_its_children_with_normal_scheduling(tmp_path):
    # SVT-AV1 run as root (as CI and many robot computers run) switched the encoding thread to SCHED_FIFO
    # for good; every later subprocess inherited it and starved a virtual servo bus of CPU.
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    frames = np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3), dtype=np.uint8)
    w = VideoWriter(tmp_path / "a.mp4", 10, 64, 64)
    w.add(frames[:2])
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
    w.add(frames[2:])
    w.close()
    assert (os.sched_getscheduler(0), os.sched_getparam(0)) == before
    child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"], capture_output=True)
    assert int(child.stdout) == before[0]
    got = VideoCursor(tmp_path / "a.mp4", 10).frames_at([0.0, 0.3])
    assert got.shape == (2, 64, 64, 3)
