"""The embedded default run behind `vla quickstart` / `launch/quickstart.sh`.

Today it exercises the data layer end to end: a synthetic store -> LeRobot v3.0 export ->
import back -> info and contact sheets for both. Each step is skipped when its output
exists (use --force to redo). Simulation, training, evaluation and deployment steps join
as those parts land.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from vla.data.lerobot_export import export_lerobot
from vla.data.lerobot_import import import_lerobot
from vla.data.stats import compute_norm_stats, save_stats
from vla.data.store import EpisodeStore
from vla.data.synthetic import write_synthetic
from vla.data.viz import contact_sheet
from vla.spec import load_embodiment


def _step(n: int, total: int, title: str, out: Path, force: bool) -> bool:
    """Print the step header; True when the step must run."""
    done = out.exists()
    if done and force:
        shutil.rmtree(out) if out.is_dir() else out.unlink()
        done = False
    print(f"\n[{n}/{total}] {title}" + ("  (done already; --force redoes it)" if done else ""), flush=True)
    return not done


def _describe(store_path: Path, sheet: Path) -> dict:
    s = EpisodeStore.open(store_path)
    summary = s.summary()
    save_stats(compute_norm_stats(s), store_path / "norm_stats.json")
    contact_sheet(s, sheet)
    print(f"    {s.num_episodes} episodes, {s.num_frames} frames, embodiments {sorted(s.embodiments)}")
    for task, n in sorted(summary["tasks"].items()):
        print(f"      {n:>3} x {task}")
    print(f"    contact sheet: {sheet}")
    return summary


def run_quickstart(out: Path, *, force: bool = False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    emb = load_embodiment("toy2d")
    synth, lerobot, back = out / "data" / "synthetic", out / "data" / "lerobot_v30", out / "data" / "reimported"
    total = 4
    if _step(1, total, f"write a synthetic store ({emb.name}: 12 episodes x 60 frames, 2 cameras)", synth, force):
        shutil.rmtree(synth.with_name(synth.name + ".tmp"), ignore_errors=True)
        tmp = synth.with_name(synth.name + ".tmp")
        store = EpisodeStore.create(tmp, [emb])
        write_synthetic(store, emb, episodes=12, length=60, seed=0, progress=True)
        tmp.rename(synth)
    if _step(2, total, f"export to LeRobot v3.0 -> {lerobot}", lerobot, force):
        r = export_lerobot(synth, lerobot)
        print(f"    {r['episodes']} episodes, video cameras {r['video_cameras']}")
    if _step(3, total, f"import the LeRobot folder back -> {back}", back, force):
        r = import_lerobot(lerobot, back)
        print(f"    {r['frames']} frames at {r['frames_per_s']:.0f} frames/s")
    print(f"\n[4/{total}] describe both stores (vla data info)")
    report = {"synthetic": _describe(synth, out / "synthetic_contact.png"),
              "reimported": _describe(back, out / "reimported_contact.png")}
    (out / "summary.json").write_text(json.dumps(report, indent=2))
    print(f"\nquickstart finished in {time.perf_counter() - t0:.1f}s; outputs in {out}/ (summary.json, *_contact.png)")
    return report
