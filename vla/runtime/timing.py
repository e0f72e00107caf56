"""Per-tick timing of a control run: summary figures, CSV/JSON logs and a histogram PNG; and the
fixed-rate wait that the control loop and the teleoperation loop tick on."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def sleep_until(deadline: float, spin_s: float) -> float:
    """Sleep until `spin_s` before `deadline` (monotonic), then spin; returns the time woken."""
    now = time.monotonic()
    if deadline - now > spin_s:
        time.sleep(deadline - now - spin_s)
    while True:
        now = time.monotonic()
        if now >= deadline:
            return now


def _q(x, q, nd: int = 4) -> float | None:
    return None if len(x) == 0 else round(float(np.quantile(np.asarray(x, np.float64), q)), nd)


def _max(x) -> float | None:
    return None if len(x) == 0 else round(float(np.max(x)), 4)


@dataclass
class TimingLog:
    period_s: float
    miss_tolerance_s: float
    ticks: list = field(
        default_factory=list
    )  # (k, lateness_ms, sent_s, held, switched, raw_jump, sent_change, new_grid)
    inference: list = field(default_factory=list)  # (k_obs, k_used, latency_ms, server_ms, ok)
    skipped: int = 0

    def tick(
        self,
        k: int,
        lateness_s: float,
        sent_s: float,
        held: bool,
        switched: bool,
        raw_jump: float,
        sent_change: float,
        new_grid: bool = False,
    ) -> None:
        """new_grid: the first tick after an episode reset (its period to the tick before is not a period)."""
        self.ticks.append((k, lateness_s * 1000, sent_s, held, switched, raw_jump, sent_change, new_grid))

    def infer(self, k_obs: int, k_used: int, latency_s: float, server_ms: float | None, ok: bool) -> None:
        self.inference.append((k_obs, k_used, latency_s * 1000, server_ms, ok))

    # ---- figures ----
    def periods_ms(self) -> np.ndarray:
        sent = np.array([t[2] for t in self.ticks], np.float64)
        if len(sent) < 2:
            return np.zeros(0)
        keep = ~np.array([t[7] for t in self.ticks[1:]], bool)
        return (np.diff(sent) * 1000)[keep]

    def summary(self) -> dict:
        per = self.periods_ms()
        nominal = self.period_s * 1000
        late = np.array([t[1] for t in self.ticks])
        misses = int(np.sum(late > self.miss_tolerance_s * 1000)) + self.skipped
        lat = [x[2] for x in self.inference if x[4]]
        srv = [x[3] for x in self.inference if x[4] and x[3] is not None]
        delays = [x[1] - x[0] for x in self.inference if x[4]]
        switch_jumps = [t[5] for t in self.ticks if t[4] and math.isfinite(t[5])]
        changes = [t[6] for t in self.ticks if math.isfinite(t[6])]
        return {
            "ticks": len(self.ticks),
            "nominal_period_ms": round(nominal, 3),
            "period_ms": {
                "p50": _q(per, 0.5),
                "p99": _q(per, 0.99),
                "max": _max(per),
                "min": None if len(per) == 0 else round(float(per.min()), 3),
            },
            "jitter_ms": {
                "p50": _q(np.abs(per - nominal), 0.5),
                "p99": _q(np.abs(per - nominal), 0.99),
                "max": _max(np.abs(per - nominal)),
            },
            "lateness_ms": {"p50": _q(late, 0.5), "p99": _q(late, 0.99), "max": _max(late)},
            "deadline_misses": misses,
            "skipped_ticks": self.skipped,
            "held_ticks": int(sum(1 for t in self.ticks if t[3])),
            "inference": {
                "requests": len(self.inference),
                "failed": sum(1 for x in self.inference if not x[4]),
                "latency_ms": {"p50": _q(lat, 0.5), "p99": _q(lat, 0.99), "max": _max(lat)},
                "server_infer_ms_p50": _q(srv, 0.5),
                "delay_ticks": {"p50": _q(delays, 0.5), "max": _max(delays)},
            },
            "chunk_switches": len(switch_jumps),
            "boundary_jump": {"p50": _q(switch_jumps, 0.5), "p90": _q(switch_jumps, 0.9), "max": _max(switch_jumps)},
            "max_boundary_jump": _max(switch_jumps),
            "action_change": {"p99": _q(changes, 0.99), "max": _max(changes)},
            "max_action_change": _max(changes),
        }

    # ---- files ----
    def save(self, out: Path, summary: dict | None = None) -> dict:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "ticks.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["tick", "lateness_ms", "sent_s", "held", "switched", "boundary_jump", "action_change"])
            for t in self.ticks:
                w.writerow([t[0], f"{t[1]:.4f}", f"{t[2]:.6f}", int(t[3]), int(t[4]), f"{t[5]:.6g}", f"{t[6]:.6g}"])
        with open(out / "inference.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["tick_obs", "tick_used", "latency_ms", "server_infer_ms", "ok"])
            for x in self.inference:
                w.writerow([x[0], x[1], f"{x[2]:.3f}", "" if x[3] is None else f"{x[3]:.3f}", int(x[4])])
        summary = summary or self.summary()
        (out / "timing.json").write_text(json.dumps(summary, indent=2) + "\n")
        return {
            "ticks_csv": str(out / "ticks.csv"),
            "inference_csv": str(out / "inference.csv"),
            "timing_json": str(out / "timing.json"),
            "histogram_png": str(self.plot(out / "timing.png")),
        }

    def plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        per = self.periods_ms()
        lat = [x[2] for x in self.inference if x[4]]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        ax = axes[0]
        if len(per):
            ax.hist(per, bins=60, color="tab:blue")
            ax.axvline(self.period_s * 1000, color="k", ls="--", lw=1, label="nominal")
            ax.set_yscale("log")
            ax.legend()
        ax.set_xlabel("tick period (ms)")
        ax.set_ylabel("ticks")
        ax.set_title(
            f"control ticks (p99 jitter {_q(np.abs(per - self.period_s * 1000), 0.99) if len(per) else '-'} ms)"
        )
        ax = axes[1]
        if lat:
            ax.hist(lat, bins=40, color="tab:orange")
        ax.set_xlabel("inference latency, request to reply (ms)")
        ax.set_ylabel("chunks")
        ax.set_title(f"inference (p50 {_q(lat, 0.5)} ms)")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return path
