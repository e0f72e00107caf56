"""The embedded default run behind `vla quickstart` / `launch/quickstart.sh`.

    1 collect   scripted demos: arm7 + arm5 language-conditioned reach-goal, pick-place and reach
                with a free layout (datasets/quickstart.toml; the suite evaluates the first two)
    2 inspect   dataset summary, norm stats, contact sheet
    3 train     pi0-tiny on the demos (CPU)
    4 eval      the policy and the scripted expert on held-out seeds (suite `quickstart`), with
                videos, plus the language-shuffle check on reach-goal (the instruction is the
                only cue there to which target)
    5 deploy    `vla serve` + `vla sim-robot` + `vla run` for a short real-time run
    6 report    runs/<name>/report.html
Each step writes its outputs under the run folder and is skipped when they exist
(`--force` redoes everything). Progress lines go to the `vla.quickstart` logger at INFO; the
`vla quickstart` command shows them on stdout as plain text.
"""

from __future__ import annotations

import functools
import json
import logging
import platform
import shutil
import time
from pathlib import Path

from vla.outputs import claim_folder
from vla.report import build_report
from vla.resources import content_dir
from vla.spec import SpecError

log = logging.getLogger(__name__)

RECIPE = "datasets/quickstart.toml"
SUITE = "quickstart"
LANGUAGE_TASK = "reach-goal"  # the suite's tasks the language-shuffle check runs on (listed first)


class _Steps:
    def __init__(self, out: Path, force: bool, total: int):
        self.out, self.force, self.count, self.n = out, force, total, 0
        self.path = out / "timings.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.exists() and not force else {}
        self.current, self.t, self.ran = None, time.perf_counter(), False

    def _lap(self) -> None:
        """Record the wall time of the step that just ended (only steps that ran count)."""
        now = time.perf_counter()
        if self.current is not None and self.ran:
            self.times[self.current] = round(now - self.t, 1)
            self.path.write_text(json.dumps(self.times, indent=1))
        self.t = now

    @property
    def total(self) -> float:
        return sum(self.times.values())

    def __call__(self, title: str, marker: Path | None = None) -> bool:
        """Log the step header; True when the step must run (its marker output is missing)."""
        self._lap()
        self.n += 1
        self.current = title.split(" ")[0].rstrip(":")
        done = marker is not None and marker.exists() and not self.force
        self.ran = not done
        log.info(f"\n[{self.n}/{self.count}] {title}" + ("  (done already; --force redoes it)" if done else ""))
        return not done


def _json(path: Path, data: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    return data


def _check_options(train_minutes: float, deploy_seconds: float, steps: int, episodes: int, workers: int) -> None:
    for name, value in {"train_minutes": train_minutes, "deploy_seconds": deploy_seconds}.items():
        if not value > 0:
            raise SpecError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    for name, value in {"steps": steps, "episodes": episodes, "workers": workers}.items():
        if value < 1:
            raise SpecError(f"--{name} must be >= 1, got {value}")


def _inspect(demos: Path, out: Path) -> None:
    """What `vla data info` shows: the summary, the norm stats and a contact sheet."""
    from vla.data.stats import compute_norm_stats, save_stats
    from vla.data.store import EpisodeStore
    from vla.data.viz import contact_sheet

    s = EpisodeStore.open(demos)
    save_stats(compute_norm_stats(s), out / "norm_stats.json")
    contact_sheet(s, out / "contact_sheet.png")
    _json(out / "dataset.json", s.summary())


def _training_summary(ckpt: Path) -> dict:
    from vla.model.interop.checkpoint import Checkpoint

    cfg = Checkpoint(ckpt, verify=False).resolved
    metrics = [json.loads(x) for x in (ckpt / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {
        "preset": "pi0-tiny",
        "steps": cfg.step,
        "parameters": f"{cfg.params / 1e6:.2f}M",
        "final loss": f"{metrics[-1]['loss']:.4f}" if metrics else "-",
        "windows/s": f"{sum(m['windows_per_s'] for m in metrics[-10:]) / max(1, len(metrics[-10:])):.0f}",
    }


def _evaluate(ckpt: Path, demos: Path, ev: Path, episodes: int, workers: int) -> None:
    """The policy and the expert on the suite, the language check and the offline probes -> ev/*.json."""
    from vla.bench.learn import goal_error, language_check, reliance_probe
    from vla.runtime.policy import load_policy
    from vla.sim import evaluate
    from vla.sim.eval import format_results

    factory = functools.partial(load_policy, str(ckpt))
    factory.name = "pi0-tiny"  # shown in tables and charts
    pol = evaluate(
        factory,
        SUITE,
        episodes=episodes,
        workers=workers,
        json_out=ev / "policy.json",
        videos=ev / "videos",
        num_videos=2,
    )
    log.info(format_results(pol))
    exp = evaluate("expert", SUITE, episodes=episodes, workers=workers, json_out=ev / "expert.json")
    log.info(format_results(exp))
    lang_suite, pool, normal = _language_subset(pol, demos)
    lang = language_check(ckpt, lang_suite, pool, episodes=episodes, workers=workers, normal=normal)
    _json(ev / "language.json", {**lang, "probe": reliance_probe(ckpt, demos), "goal": goal_error(ckpt, demos)})


def _facts(step: _Steps) -> dict:
    """The report's header line: the machine and the time each step took."""
    return {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        "python": platform.python_version(),
        "time per step": ", ".join(f"{k} {v:.0f} s" for k, v in step.times.items()) or "-",
        "total": f"{step.total:.0f} s",
    }


def run_quickstart(
    out: Path,
    *,
    force: bool = False,
    train_minutes: float = 10.0,
    steps: int = 12000,
    episodes: int = 10,
    deploy_seconds: float = 20.0,
    workers: int = 2,
) -> dict:
    from vla.config import load_preset
    from vla.sim import collect
    from vla.train.trainer import train

    _check_options(train_minutes, deploy_seconds, steps, episodes, workers)
    out = claim_folder(out, "quickstart", legacy=lambda p: (p / "timings.json").exists())
    if force:  # redo every step: the folder is the quickstart's own (checked above)
        shutil.rmtree(out)
        claim_folder(out, "quickstart")
    t0 = time.perf_counter()
    step = _Steps(out, force, 6)
    demos, ckpt, ev = out / "data" / "demos", out / "ckpt", out / "eval"

    if step(f"collect scripted demos ({RECIPE}) -> {demos}", demos):
        tmp = demos.with_name("demos.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        collect(str(content_dir("datasets") / Path(RECIPE).name), str(tmp), workers=workers)
        tmp.rename(demos)

    if step("inspect the dataset (vla data info)", out / "dataset.json"):
        _inspect(demos, out)
    dataset = json.loads((out / "dataset.json").read_text())
    log.info(
        f"    {dataset['episodes']} episodes, {dataset['frames']} frames, embodiments {sorted(dataset['embodiments'])}, "
        f"{len(dataset['tasks'])} instructions; contact sheet {out / 'contact_sheet.png'}"
    )

    if step(
        f"train pi0-tiny on the CPU for {train_minutes:g} minutes (at most {steps} steps) -> {ckpt}",
        ckpt / "config.json",
    ):
        preset = load_preset("pi0-tiny", {"train": {"workers": 1}})
        train(preset, [str(demos)], ckpt, steps=steps, max_seconds=train_minutes * 60)
    training = _training_summary(ckpt)

    if step(
        f"evaluate on held-out seeds (suite '{SUITE}', {episodes} episodes per task) + expert + language check",
        ev / "language.json",
    ):
        _evaluate(ckpt, demos, ev, episodes, workers)
    pol = json.loads((ev / "policy.json").read_text())
    exp = json.loads((ev / "expert.json").read_text())
    lang = json.loads((ev / "language.json").read_text())
    log.info(
        f"    policy success {pol['overall']['success_rate']:.0%}, expert {exp['overall']['success_rate']:.0%}; "
        f"language check: {lang['normal']:.0%} -> {lang['shuffled']:.0%} shuffled ({lang['verdict']})"
    )

    deploy = out / "deploy" / "quickstart.json"
    if step(
        f"deploy: vla serve + vla sim-robot + vla run (arm7 reach-goal, 50 Hz, rtc) for {deploy_seconds:.0f} s", deploy
    ):
        _json(deploy, _deploy(ckpt, out / "deploy", deploy_seconds))
    d = json.loads(deploy.read_text())
    control, control_png = d["table"], d["histogram"]
    log.info("    " + "; ".join(f"{k}: {v}" for k, v in control.items()))

    step("write the report")
    step._lap()
    videos = sorted(str(p) for p in (ev / "videos").glob("*.mp4"))
    report = build_report(
        out / "report.html",
        title="vla quickstart",
        facts=_facts(step),
        dataset=dataset,
        contact_sheet=str(out / "contact_sheet.png"),
        training=training,
        loss_png=str(ckpt / "loss.png"),
        eval_policy=pol,
        eval_expert=exp,
        eval_chart=pol.get("chart"),
        videos=_pick_videos(videos),
        language=lang,
        control=control,
        control_png=control_png,
    )
    log.info(f"\nquickstart finished in {time.perf_counter() - t0:.0f} s. Report: {report}")
    return {
        "report": str(report),
        "policy": pol["overall"],
        "expert": exp["overall"],
        "language": lang,
        "control": control,
    }


def _language_subset(pol: dict, demos: Path):
    """The suite's LANGUAGE_TASK tasks (the same seeds as in the full suite: they come first),
    the demos' instructions of that task, and the policy's success on them."""
    from dataclasses import replace

    from vla.bench.learn import task_pools
    from vla.sim.suites import load_suite

    suite = load_suite(SUITE)
    n = sum(t.task == LANGUAGE_TASK for t in suite.tasks)
    if [t.task for t in suite.tasks[:n]] != [LANGUAGE_TASK] * n:
        raise ValueError(f"suite {SUITE!r}: the {LANGUAGE_TASK} tasks must come first (their seeds are shared)")
    pools = task_pools(str(demos))
    pool = sorted({i for t in suite.tasks[:n] for i in pools.get(f"{t.robot}/{t.task}", [])})
    rows = [r for r in pol["tasks"] if r["task"] == LANGUAGE_TASK]
    normal = {"overall": {"success_rate": sum(r["success_rate"] for r in rows) / len(rows)}}
    return replace(suite, tasks=suite.tasks[:n]), pool, normal


def _pick_videos(videos: list[str]) -> list[str]:
    """A couple of successes and failures."""
    succ = [v for v in videos if "success" in Path(v).stem][:2]
    fail = [v for v in videos if "fail" in Path(v).stem][:2]
    return succ + fail


def _deploy(ckpt: Path, out: Path, seconds: float):
    """Short real-time run of arm7 reach-goal through `vla serve` (child) + `vla sim-robot` (child) + the loop."""
    from vla.runtime.launch import load_launch
    from vla.runtime.run import run_deployment
    from vla.runtime.safety import describe_interventions

    # Episodes (5 s of reach each) restart until the duration is up: the run lasts `seconds`.
    overrides = {
        "policy": {"checkpoint": str(ckpt)},
        "control": {"duration_s": seconds, "episodes": 1000},
        "record": {"out": str(out)},
    }
    cfg = load_launch("arm7-reach-sim", overrides)
    summary = run_deployment("arm7-reach-sim", out=out, status=True, overrides=overrides)
    t = {k: summary.get(k) for k in ("ticks", "deadline_misses", "held_ticks", "chunk_switches", "max_boundary_jump")}
    table = {
        "loop": f"{cfg.control.hz:g} Hz, mode {cfg.chunking.mode}, {seconds:.0f} s",
        "ticks": t["ticks"],
        "deadline misses": t["deadline_misses"],
        "tick period p50 / p99 / max (ms)": "{p50} / {p99} / {max}".format(**summary["period_ms"]),
        "jitter p99 (ms)": summary["jitter_ms"]["p99"],
        "inference latency p50 / p99 (ms)": "{p50} / {p99}".format(**summary["inference"]["latency_ms"]),
        "held ticks (first chunk, waits, watchdog)": t["held_ticks"],
        "watchdog holds": (summary.get("safety") or {}).get("watchdog_hold", 0),
        "safety interventions": describe_interventions(summary.get("safety") or {}, summary.get("safety_by_dim")),
        "episodes that reached the target": "{} of {}".format(
            summary.get("successes", 0), sum(e.get("success") is not None for e in summary.get("episodes", []))
        ),
        "max action change per tick": summary.get("max_action_change"),
    }
    return {"table": table, "histogram": summary["files"]["histogram_png"], "summary": summary}
