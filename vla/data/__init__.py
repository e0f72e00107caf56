"""Episode store, window sampling, norm stats, LeRobot interchange."""

from vla.data.frame_files import StoreError
from vla.data.store import EpisodeInfo, EpisodeStore
from vla.data.writer import EpisodeWriter, FrameError

__all__ = ["EpisodeStore", "EpisodeWriter", "EpisodeInfo", "StoreError", "FrameError"]
