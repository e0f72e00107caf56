"""A self-contained HTML report of a run (the quickstart's `runs/<name>/report.html`).

Pictures are embedded as data URIs and videos are copied beside the page (`report_files/`),
so the folder can be zipped, mailed or served as is. Sections (each an <section id=...>):
    dataset   dataset summary and contact sheet
    training  loss curve and training figures
    eval      success per task with 95% CIs, against the scripted expert
    videos    rollout videos (success and failure)
    language  the language-shuffle check
    control   control loop latency / jitter histogram and timing figures
A missing input leaves its section with a plain "not available" note, never a broken page.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from pathlib import Path

SECTIONS = ("dataset", "training", "eval", "videos", "language", "control")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0}
section{border-top:1px solid #ddd;padding:1rem 0}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:right}
th{background:#f5f5f5} td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eee} .grid{display:flex;flex-wrap:wrap;gap:1rem}
.grid figure{margin:0} figcaption{font-size:.85rem;color:#555}
.ok{color:#1a7f37;font-weight:600} .bad{color:#b42318;font-weight:600} .na{color:#888;font-style:italic}
code{background:#f5f5f5;padding:0 .2rem}
"""


def _img(path: str | Path | None, alt: str) -> str:
    if not path or not Path(path).exists():
        return f'<p class="na">{html.escape(alt)}: not available</p>'
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _na(what: str) -> str:
    return f'<p class="na">{html.escape(what)}: not available in this run</p>'


def _rate(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['successes']}/{r['episodes']} = {r['success_rate']:.0%} [{lo:.0%}, {hi:.0%}]"


def _eval_table(policy: dict | None, expert: dict | None) -> str:
    if not policy:
        return _na("evaluation")
    exp = {(r["robot"], r["task"]): r for r in (expert or {}).get("tasks", [])}
    rows = [
        "<tr><th>robot / task</th><th>policy success (95% CI)</th><th>scripted expert</th><th>mean length</th></tr>"
    ]
    for r in policy["tasks"]:
        e = exp.get((r["robot"], r["task"]))
        ml = f"{r['mean_length']:.1f}" if r.get("mean_length") is not None else "-"
        rows.append(
            f"<tr><td>{html.escape(r['robot'])} / {html.escape(r['task'])}</td><td>{_rate(r)}</td>"
            f"<td>{_rate(e) if e else '-'}</td><td>{ml}</td></tr>"
        )
    o = policy["overall"]
    eo = (expert or {}).get("overall")
    rows.append(f"<tr><th>overall</th><th>{_rate(o)}</th><th>{_rate(eo) if eo else '-'}</th><th></th></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _dataset_section(dataset: dict | None, contact_sheet: str | None) -> list[str]:
    """Episodes, frames and instructions per embodiment; the contact sheet."""
    parts = ['<section id="dataset"><h2>Dataset</h2>']
    if dataset:
        emb_rows = "".join(
            f"<tr><td>{html.escape(n)}</td><td>{e['episodes']}</td><td>{e['frames']}</td>"
            f"<td>{e['control_hz']}</td></tr>"
            for n, e in dataset.get("embodiments", {}).items()
        )
        parts.append(
            f"<p>{dataset.get('episodes')} episodes, {dataset.get('frames')} frames, "
            f"{len(dataset.get('tasks', {}))} distinct instructions.</p>"
            f"<table><tr><th>embodiment</th><th>episodes</th><th>frames</th><th>Hz</th></tr>{emb_rows}</table>"
        )
    else:
        parts.append(_na("dataset summary"))
    parts.append(_img(contact_sheet, "contact sheet") + "</section>")
    return parts


def _videos_section(videos: list[str] | None, files: Path) -> list[str]:
    """The rollout videos, copied into `files` beside the page."""
    parts = ['<section id="videos"><h2>Rollouts</h2>']
    if videos:
        figs = []
        for v in videos:
            src = Path(v)
            if not src.exists():
                continue
            dst = files / src.name
            if src.resolve() != dst.resolve():
                shutil.copy2(src, dst)
            label = "success" if "success" in src.stem else ("failure" if "fail" in src.stem else src.stem)
            figs.append(
                f'<figure><video controls loop muted width="256" src="report_files/{html.escape(src.name)}"></video>'
                f"<figcaption class='{'ok' if label == 'success' else 'bad'}'>{html.escape(label)}: "
                f"{html.escape(src.stem)}</figcaption></figure>"
            )
        parts.append('<div class="grid">' + "".join(figs) + "</div>" if figs else _na("rollout videos"))
    else:
        parts.append(_na("rollout videos"))
    parts.append("</section>")
    return parts


def _language_section(language: dict | None) -> list[str]:
    """Does the policy use its inputs: instructions shuffled, the offline probe, the goal check."""
    parts = ['<section id="language"><h2>Language check</h2>']
    if language:
        verdict = language.get("verdict", "")
        cls = "ok" if language.get("passed") else "bad"
        parts.append(
            f"<p>On reach-goal (the named colour is the only cue to which target): same checkpoint, same "
            f"scenes, instructions shuffled across episodes: success {language['normal']:.0%} with the right instruction vs "
            f"{language['shuffled']:.0%} shuffled; chance is about {language['chance']:.0%}. "
            f"<span class='{cls}'>{html.escape(verdict)}</span></p>"
        )
        probe = language.get("probe")
        if probe:
            loss = probe["loss"]
            parts.append(
                f"<p id='probe'>Offline probe on {probe['windows']} demo windows (training loss, same noise): "
                f"{loss['as_recorded']:.4f} as recorded, {loss['other_images']:.4f} with another episode's "
                f"images ({probe['rise_other_images']:+.0%}), {loss['other_instruction']:.4f} with another "
                f"episode's instruction ({probe['rise_other_instruction']:+.0%}). A loss that does not rise "
                f"means the policy ignores that input.</p>"
            )
        goal = (language.get("goal") or {}).get("per_embodiment")
        if goal:
            rows = "; ".join(
                f"{html.escape(n)} {g['end']:.3f} (always answering the average end point: "
                f"{g['end_if_average']:.3f}; "
                + (
                    "one chunk per observation, sampled from zero)"
                    if g["spread"] is None
                    else f"spread across samples {g['spread']:.3f})"
                )
                for n, g in goal.items()
            )
            parts.append(
                f"<p id='goal'>Does the policy know where an episode goes? From each demo's first frame, "
                f"mean error of the sampled chunk's last step against the demo, joint units: {rows}. "
                f"Near the average's error: the goal is not read from the observation.</p>"
            )
    else:
        parts.append(_na("language-shuffle check"))
    parts.append("</section>")
    return parts


def build_report(
    out: str | Path,
    *,
    title: str,
    facts: dict | None = None,
    dataset: dict | None = None,
    contact_sheet: str | None = None,
    training: dict | None = None,
    loss_png: str | None = None,
    eval_policy: dict | None = None,
    eval_expert: dict | None = None,
    eval_chart: str | None = None,
    videos: list[str] | None = None,
    language: dict | None = None,
    control: dict | None = None,
    control_png: str | None = None,
) -> Path:
    out = Path(out)
    files = out.parent / "report_files"
    files.mkdir(parents=True, exist_ok=True)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    if facts:
        parts.append(
            '<p class="sub">'
            + " &middot; ".join(f"{html.escape(k)}: <b>{html.escape(str(v))}</b>" for k, v in facts.items())
            + "</p>"
        )
    parts += _dataset_section(dataset, contact_sheet)

    # training
    parts.append('<section id="training"><h2>Training</h2>')
    if training:
        parts.append(
            "<p>" + ", ".join(f"{html.escape(k)}: <b>{html.escape(str(v))}</b>" for k, v in training.items()) + "</p>"
        )
    parts.append(_img(loss_png, "loss curve") + "</section>")

    # eval
    parts.append('<section id="eval"><h2>Success per task (held-out seeds)</h2>')
    parts.append(_eval_table(eval_policy, eval_expert))
    if eval_chart:
        parts.append(_img(eval_chart, "success chart"))
    parts.append("</section>")

    parts += _videos_section(videos, files)
    parts += _language_section(language)

    # control
    parts.append('<section id="control"><h2>Real-time control loop</h2>')
    if control:
        parts.append(
            "<table>"
            + "".join(
                f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in control.items()
            )
            + "</table>"
        )
    parts.append(_img(control_png, "latency / jitter histogram") + "</section>")
    parts.append("</body></html>")
    out.write_text("\n".join(parts))
    (out.parent / "report.json").write_text(
        json.dumps(
            {
                "title": title,
                "facts": facts,
                "dataset": dataset,
                "training": training,
                "eval_policy": eval_policy,
                "eval_expert": eval_expert,
                "language": language,
                "control": control,
            },
            indent=2,
            default=str,
        )
    )
    return out
