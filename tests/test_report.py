"""The run report renders in a real browser with every section present."""

import shutil
import subprocess

import numpy as np
import pytest

from vla.data.video import VideoWriter
from vla.report import SECTIONS, build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _png(path, color):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0], color=color)
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def _fake_run(tmp_path):
    vid = tmp_path / "arm7_reach_seed1_success.mp4"
    w = VideoWriter(vid, 20, 64, 64, "libx264")
    w.add(np.random.default_rng(0).integers(0, 255, (10, 64, 64, 3), dtype=np.uint8))
    w.close()
    row = {
        "robot": "arm7",
        "task": "reach",
        "episodes": 10,
        "successes": 8,
        "success_rate": 0.8,
        "ci95": [0.49, 0.94],
        "mean_length": 31.0,
    }
    res = {"tasks": [row], "overall": {k: row[k] for k in ("episodes", "successes", "success_rate", "ci95")}}
    exp = {
        "tasks": [dict(row, successes=10, success_rate=1.0, ci95=[0.72, 1.0])],
        "overall": {"episodes": 10, "successes": 10, "success_rate": 1.0, "ci95": [0.72, 1.0]},
    }
    return build_report(
        tmp_path / "report.html",
        title="vla quickstart",
        facts={"machine": "test"},
        dataset={
            "episodes": 4,
            "frames": 100,
            "tasks": {"reach the red target": 4},
            "embodiments": {"arm7": {"episodes": 4, "frames": 100, "control_hz": 20}},
        },
        contact_sheet=_png(tmp_path / "sheet.png", "red"),
        training={"steps": 10},
        loss_png=_png(tmp_path / "loss.png", "blue"),
        eval_policy=res,
        eval_expert=exp,
        videos=[str(vid)],
        language={
            "normal": 0.8,
            "shuffled": 0.3,
            "chance": 1 / 3,
            "passed": True,
            "verdict": "uses the instruction",
            "probe": {
                "windows": 256,
                "loss": {"as_recorded": 0.1, "other_images": 0.15, "other_instruction": 0.3},
                "rise_other_images": 0.5,
                "rise_other_instruction": 2.0,
            },
            "goal": {
                "per_embodiment": {
                    "arm7": {"first": 0.01, "end": 0.05, "spread": 0.02, "end_if_average": 0.2, "episodes": 32},
                    "arm5": {"first": 0.01, "end": 0.04, "spread": None, "end_if_average": 0.2, "episodes": 32},
                },
                "samples": 3,
            },
        },
        control={"tick p99 ms": 0.4},
        control_png=_png(tmp_path / "hist.png", "green"),
    )


def test_report_has_every_section_and_assets(tmp_path):
    page = _fake_run(tmp_path)
    text = page.read_text()
    for s in SECTIONS:
        assert f'<section id="{s}">' in text, s
    assert text.count("data:image/png;base64,") == 3  # sheet, loss, histogram
    assert (tmp_path / "report_files" / "arm7_reach_seed1_success.mp4").exists()
    assert "8/10 = 80%" in text and "10/10 = 100%" in text
    assert "0.3000 with another episode's instruction (+200%)" in text  # the offline probe's line
    assert "arm7 0.050 (always answering the average end point: 0.200; spread across samples 0.020)" in text
    assert "arm5 0.040 (always answering the average end point: 0.200; one chunk per observation" in text


def test_missing_inputs_degrade_to_notes(tmp_path):
    page = build_report(tmp_path / "r.html", title="empty")
    text = page.read_text()
    assert all(f'<section id="{s}">' in text for s in SECTIONS)
    assert text.count("not available") >= 5


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package 'chromium'; .ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    page = _fake_run(tmp_path)
    prof = tmp_path / "profile"
    script = (
        "<script>document.addEventListener('DOMContentLoaded',()=>{const ok=[...document.images].every(i=>i.complete"
        "&&i.naturalWidth>0);document.body.setAttribute('data-images-ok',ok?'yes':'no');});</script>"
    )
    page.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={prof}", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=90,
    ).stdout
    for s in SECTIONS:
        assert f'id="{s}"' in dom, s
    assert 'data-images-ok="yes"' in dom, "an embedded picture failed to decode in the browser"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={prof}", "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        timeout=90,
    )
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"))
    assert img.std() > 5, "the screenshot is blank"
