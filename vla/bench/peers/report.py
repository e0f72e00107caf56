"""`vla bench peers`' outputs for people: the side-by-side Markdown table and success-vs-minutes curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = {"vla": "vla", "act": "LeRobot ACT", "diffusion": "LeRobot Diffusion Policy"}


def _cell(r: dict) -> str:
    errors = f", {r['errors']} crashed" if r.get("errors") else ""  # episodes the harness could not count
    return f"{100 * r['success_rate']:.0f}% ({r['successes']}/{r['episodes']}{errors})"


def _column(name: str, row: dict) -> str:
    """A policy's column head: size, steps reached, and the CPU time its training process actually had."""
    cpu = f", {row['cpu_seconds'] / 60:.1f} CPU-min used" if row.get("cpu_seconds") is not None else ""
    return f"{LABELS.get(name, name)} ({row['params'] / 1e6:.1f}M, {row['steps']} steps{cpu})"


def markdown(results: dict) -> str:
    """Per task: each policy's held-out success at the end of training; then the averages at every point."""
    rows, avgs = results["results"], results["averages"]
    policies = list(results["policies"])
    end = results["minutes"]
    head = [
        f"Suite `{results['suite']}`, {results['episodes_per_task']} held-out episodes per task from seed "
        f"{results['seed']}; {results['demos']['episodes']} demos; every policy trained for {end:g} minutes of "
        f"wall-clock time with {results['machine']['threads'] if 'machine' in results else '?'} torch threads, "
        "one after another (the CPU time each actually got is in its column).",
        "",
    ]
    cols = [_column(p, results["policies"][p]) for p in policies]
    lines = [f"| task | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    for t in tasks:
        cells = []
        for p in policies:
            r = next((x for x in rows if x["policy"] == p and x["task"] == t and x["minutes"] == end), None)
            cells.append(_cell(r) if r else "-")
        lines.append(f"| {t} | {' | '.join(cells)} |")
    cells = []
    for p in policies:
        a = next((x for x in avgs if x["policy"] == p and x["minutes"] == end), None)
        cells.append(f"**{100 * a['success_rate']:.1f}%**" if a else "-")
    lines.append(f"| average | {' | '.join(cells)} |")
    points = sorted({a["minutes"] for a in avgs})
    if len(points) > 1:
        lines += ["", "| average success at minutes | " + " | ".join(f"{m:g}" for m in points) + " |"]
        lines.append("|---" * (len(points) + 1) + "|")
        for p in policies:
            vals = []
            for m in points:
                a = next((x for x in avgs if x["policy"] == p and x["minutes"] == m), None)
                vals.append(f"{100 * a['success_rate']:.1f}% ({a['steps']} steps)" if a else "-")
            lines.append(f"| {LABELS.get(p, p)} | {' | '.join(vals)} |")
    return "\n".join(head + lines + _stages(rows, policies, end))


def _stages(rows: list[dict], policies: list[str], end: float) -> list[str]:
    """Where the suite's rewards are stages (gym-aloha's 0-4), how far each policy's episodes got."""
    from vla.sim.eval import staged

    at_end = [r for r in rows if r["minutes"] == end and r.get("max_reward_counts")]
    if not any(staged(r["max_reward_counts"]) for r in at_end):  # only success or not
        return []
    lines = ["", "Episodes by the highest reward stage they reached (gym-aloha: 4 is success):", ""]
    lines += ["| task | policy | episodes per stage |", "|---|---|---|"]
    for p in policies:
        for r in (x for x in at_end if x["policy"] == p):
            got = ", ".join(f"{k}: {v}" for k, v in r["max_reward_counts"].items())
            lines.append(f"| {r['task']} | {LABELS.get(p, p)} | {got} |")
    return lines


def plot_curves(results: dict, png: Path) -> Path:
    """One panel per task and one for the average: success vs training minutes, a line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, avgs = results["results"], results["averages"]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    panels = [*tasks, "average"]
    ncol = min(4, len(panels))
    nrow = int(np.ceil(len(panels) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.4 * nrow), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        src = avgs if panel == "average" else [r for r in rows if r["task"] == panel]
        for p in results["policies"]:
            pts = sorted((r["minutes"], r["success_rate"]) for r in src if r["policy"] == p)
            if pts:
                ax.plot(*zip(*pts), marker="o", lw=2 if p == "vla" else 1.3, label=LABELS.get(p, p))
        ax.set_title(panel, fontsize=10)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(
            f"training minutes ({results['machine']['threads']} CPU threads)" if "machine" in results else "minutes"
        )
        ax.set_ylabel("held-out success")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(
        f"{results['suite']}: {results['episodes_per_task']} held-out episodes per task, "
        f"{results['demos']['episodes']} scripted demos",
        fontsize=11,
    )
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
