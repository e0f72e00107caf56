"""Cameras: spec parsing, the reader thread's latest-frame semantics, file playback, and the errors a user
meets (no such device, an unplugged camera)."""

import time

import cv2
import numpy as np
import pytest

from vla.robots.cameras import (
    CameraError,
    OpenCVCamera,
    VideoFileCamera,
    make_camera,
    parse_cameras,
)
from vla.spec import SpecError


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """8 frames of 32x24 at 40 fps; frame i has blue = 20 * i + 10 and red = 200 (BGR on disk)."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 40, (32, 24))
    for i in range(8):
        frame = np.zeros((24, 32, 3), np.uint8)
        frame[..., 0] = 20 * i + 10
        frame[..., 2] = 200
        w.write(frame)
    w.release()
    return path


def frame_index(rgb: np.ndarray) -> int:
    return int(round((float(rgb[..., 2].mean()) - 10) / 20))


def test_parse_cameras():
    assert parse_cameras("front=0, wrist=video:a b.mp4") == {"front": "0", "wrist": "video:a b.mp4"}
    assert parse_cameras(None) == {} and parse_cameras("") == {}
    assert parse_cameras({"top": 2}) == {"top": "2"}
    for bad, msg in (("front", "NAME=SPEC"), ("front=0,front=1", "named twice"), ("a/b=0", "no '/'"), ("=0", "NAME")):
        with pytest.raises(SpecError, match=msg):
            parse_cameras(bad)


def test_make_camera_forms(clip):
    assert isinstance(make_camera("0"), OpenCVCamera) and make_camera("2").device == 2
    assert make_camera("/dev/video2", name="wrist").device == "/dev/video2"
    cam = make_camera(f"video:{clip}", name="front", height=12, width=16)
    assert type(cam) is VideoFileCamera and (cam.height, cam.width, cam.name) == (12, 16, "front")
    for bad in ("webcam", "video:", "virtual:", "", "http://x"):
        with pytest.raises(SpecError, match="camera 'camera'"):
            make_camera(bad)
    with pytest.raises(SpecError, match="both height and width"):
        make_camera("0", height=10)


def test_video_file_plays_in_a_loop_at_its_rate(clip):
    cam = VideoFileCamera(clip, "front", height=12, width=16)
    with pytest.raises(CameraError, match="not connected"):
        cam.read()
    cam.connect()
    try:
        assert cam.fps == 40.0 and cam.is_connected
        t0 = time.monotonic()
        first = cam.read()
        assert first.shape == (12, 16, 3) and first.dtype == np.uint8
        assert abs(int(first[..., 0].mean()) - 200) < 8  # red channel first: RGB, not OpenCV's BGR
        while cam.frames_read < 12 and time.monotonic() - t0 < 3:  # past the end of the 8-frame file
            time.sleep(0.02)
        n, elapsed = cam.frames_read, time.monotonic() - t0
        assert n >= 12  # it looped
        assert n <= elapsed * 40 + 3  # paced at 40 fps, not as fast as the file decodes
        assert cam.frames_dropped >= n - 3  # nobody read them: replaced unread
        a = frame_index(cam.read())
        deadline = time.monotonic() + 2
        while frame_index(cam.read()) == a and time.monotonic() < deadline:
            time.sleep(0.005)
        assert frame_index(cam.read()) != a  # the newest frame comes, not the next in a queue
    finally:
        cam.close()
    assert not cam.is_connected


def test_missing_devices_are_named():
    with pytest.raises(CameraError, match=r"/dev/video97 does not exist \(video devices here:"):
        OpenCVCamera("/dev/video97", "front").connect()
    with pytest.raises(CameraError, match=r"camera 'wrist' \(57\): cannot open it"):
        OpenCVCamera(57, "wrist").connect()
    with pytest.raises(CameraError, match="no such video file"):
        VideoFileCamera("/nonexistent/clip.mp4").connect()


def test_a_camera_that_stops_is_an_error_not_a_frozen_image(clip):
    # OpenCV reads a file path like a device: at its end the source is gone, as an unplugged camera.
    cam = OpenCVCamera(str(clip), "front")
    cam.connect()
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                cam.read()
            except CameraError as e:
                assert "stopped delivering frames" in str(e)
                break
            time.sleep(0.01)
        else:
            pytest.fail("the reader never reported the end of its source")
    finally:
        cam.close()


def test_stale_frames_are_refused(clip):
    cam = VideoFileCamera(clip, "front", max_age_s=0.05)
    cam.connect()
    try:
        cam.read()
        cam._stop.set()  # the reader stops without an error: frames age
        time.sleep(0.12)
        with pytest.raises(CameraError, match="no new frame for"):
            cam.read()
    finally:
        cam.close()
