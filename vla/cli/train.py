"""`vla train` and `vla tokenizer fit`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from vla.cli.common import bench_app, emit, fail, json_path, local_store, user_errors

tokenizer_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="FAST action tokenizers.")


def _split(s: str | None) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _check_train_options(
    *, eval_every, eval_suite, minutes, steps, resume, overwrite, batch_size, workers, save_every, lr
) -> None:
    """Option values the preset cannot judge: one line naming the option, what it needs and what it got."""
    if eval_every and not eval_suite:
        fail("--eval-every needs --eval-suite")
    if minutes is not None and minutes <= 0:
        fail(f"--minutes must be > 0, got {minutes}")
    if steps is not None and steps < 1:
        fail(f"--steps must be >= 1, got {steps} (leave it out for the preset's)")
    if resume and overwrite:
        fail("give --resume (continue the checkpoint at OUT) or --overwrite (replace it), not both")
    if batch_size is not None and batch_size < 1:
        fail(f"--batch-size must be >= 1, got {batch_size}")
    for name, v in {"--workers": workers, "--save-every": save_every, "--eval-every": eval_every}.items():
        if v is not None and v < 0:
            fail(f"{name} must be >= 0, got {v}")
    if lr is not None and lr <= 0:
        fail(f"--lr must be > 0, got {lr}")


def _parse_weights(weights: str | None) -> list[float] | None:
    try:
        return [float(x) for x in _split(weights)] or None
    except ValueError:
        fail(f"--weights must be numbers, one per store, comma-separated (like 3,1), got {weights!r}")


def _given(**options) -> dict:
    """The options the user gave (the preset keeps the rest)."""
    return {k: v for k, v in options.items() if v is not None}


def train_command(
    preset: str = typer.Argument(
        ...,
        help="Policy preset name (policies/<name>.toml: pi0-tiny, pi0-tiny-facts, pi0-small, pi05-tiny, "
        "fast-tiny, pi0-paligemma, pi05-paligemma, fast-paligemma) or a .toml path.",
    ),
    data: str = typer.Option(..., help="Episode store(s), comma-separated."),
    out: Path = typer.Option(
        ...,
        help="Checkpoint directory to write (atomically). It must not exist, unless it is a checkpoint "
        "and --resume or --overwrite says what to do with it; nothing is written beside it.",
    ),
    steps: Optional[int] = typer.Option(None, help="Training steps [default: the preset's]."),
    minutes: Optional[float] = typer.Option(
        None,
        help="Wall-clock budget: stop (and checkpoint) at the first step "
        "past it; the learning-rate schedule is stretched to end there.",
    ),
    weights: Optional[str] = typer.Option(None, help="Mixture weights, one per store, comma-separated."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size [default: the preset's]."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate [default: the preset's]."),
    workers: Optional[int] = typer.Option(None, help="DataLoader worker processes [default: the preset's]."),
    save_every: Optional[int] = typer.Option(None, help="Also checkpoint every N steps."),
    resume: bool = typer.Option(False, help="Continue from OUT's train_state.pt up to --steps."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the checkpoint at OUT (never anything that is not a checkpoint)."
    ),
    init: Optional[Path] = typer.Option(
        None,
        help="Start from this checkpoint (e.g. from vla convert): its weights, "
        "geometry, head convention, tokenizer and the stats it has for your robot.",
    ),
    lora: Optional[int] = typer.Option(
        None,
        metavar="RANK",
        help="LoRA (PEFT) at this base rank; each stack's rank is "
        "RANK x its scale in the preset's train.lora table (default: the VLM's Gemma x1, "
        "the expert x2, so --lora 16 is openpi's 16/32). 0 turns it off.",
    ),
    freeze: Optional[str] = typer.Option(
        None,
        help="none | vision (the SigLIP tower) | vlm (the whole VLM: only the "
        "action expert and heads train, as SmolVLA); default: the preset's (none).",
    ),
    fsdp: bool = typer.Option(
        False,
        help="Shard parameters, gradients and optimizer states with FSDP2 over the "
        "processes of: torchrun --nproc_per_node N $(which vla) train ... --fsdp",
    ),
    hsdp: bool = typer.Option(
        False,
        "--hsdp",
        help="FSDP2 sharded within each node and replicated across nodes (HSDP; implies --fsdp): "
        "torchrun --nnodes M --nproc_per_node N ... on every node (docs/scale.md).",
    ),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... [default: cuda if available]."),
    seed: Optional[int] = typer.Option(None, help="Seed for init, batches and noise."),
    rtc_max_delay: Optional[int] = typer.Option(
        None,
        metavar="D",
        help="Training-time real-time chunking (pi0, pi05): each sample's first d actions, d uniform "
        "over 0..D policy steps, are given clean and left out of the loss; the checkpoint then serves "
        "RTC mode 'trained' [default: the preset's train.rtc_max_delay, 0 = off].",
    ),
    eval_suite: Optional[str] = typer.Option(None, help="Evaluate in simulation at every checkpoint on this suite."),
    eval_every: int = typer.Option(0, help="Checkpoint (and evaluate) every N steps; needs --eval-suite."),
    eval_episodes: int = typer.Option(5, help="Episodes per task for the periodic evaluation."),
):
    """Train a policy on episode stores. Multi-GPU/CPU: torchrun --nproc_per_node N $(which vla) train ...
    [--fsdp]; many machines: docs/scale.md. Fine-tune a converted pi0 on one GPU:
    vla train pi0-paligemma --init CKPT --lora 16 ..."""
    from vla.config import load_preset
    from vla.train.trainer import TrainingInterrupted, train

    _check_train_options(
        eval_every=eval_every,
        eval_suite=eval_suite,
        minutes=minutes,
        steps=steps,
        resume=resume,
        overwrite=overwrite,
        batch_size=batch_size,
        workers=workers,
        save_every=save_every,
        lr=lr,
    )
    if rtc_max_delay is not None and rtc_max_delay < 0:
        fail(f"--rtc-max-delay must be >= 0 (policy steps; 0 turns it off), got {rtc_max_delay}")
    save_every = eval_every or save_every
    overrides = _given(
        batch_size=batch_size,
        lr=lr,
        workers=workers,
        save_every=save_every,
        seed=seed,
        freeze=freeze,
        rtc_max_delay=rtc_max_delay,
    )
    try:
        p = load_preset(preset, {"train": overrides} if overrides else None)
        w = _parse_weights(weights)
        on_save = _periodic_eval(eval_suite, eval_episodes) if eval_suite else None
        ckpt = train(
            p,
            _split(data),
            out,
            steps=steps,
            weights=w,
            resume=resume,
            device=device,
            on_save=on_save,
            max_seconds=minutes * 60 if minutes else None,
            init=init,
            fsdp="hybrid" if hsdp else fsdp,
            lora_rank=lora,
            overwrite=overwrite,
        )
    except TrainingInterrupted as e:
        fail(str(e), code=130)
    except user_errors() as e:
        fail(str(e))
    typer.echo(f"checkpoint: {ckpt}  (loss curve: {ckpt / 'loss.png'}, metrics: {ckpt / 'metrics.jsonl'})")


def _periodic_eval(suite: str, episodes: int):
    """on_save callback: evaluate the fresh checkpoint in sim; log to <ckpt>/evals.jsonl."""
    history: list[dict] = []

    def on_save(step: int, ckpt: Path) -> None:
        from vla.runtime.policy import load_policy
        from vla.sim import evaluate

        r = evaluate(load_policy(ckpt), suite, episodes=episodes, progress=False)
        rec = {
            "step": step,
            "suite": suite,
            "success_rate": r["overall"]["success_rate"],
            "tasks": {f"{t['robot']}/{t['task']}": t["success_rate"] for t in r["tasks"]},
        }
        history.append(rec)
        (Path(ckpt) / "evals.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        typer.echo(f"\n[eval] step {step}: {suite} success {rec['success_rate']:.0%} {rec['tasks']}")

    return on_save


@tokenizer_app.command("fit")
def tokenizer_fit(
    store: str = typer.Argument(..., help="Episode store whose action chunks to fit on."),
    out: Path = typer.Option(..., help="Output directory (one sub-folder per embodiment)."),
    horizon: int = typer.Option(50, help="Chunk length H."),
    scale: float = typer.Option(10.0, help="DCT coefficient scale before rounding (accuracy vs length)."),
    vocab: int = typer.Option(1024, help="BPE vocabulary size."),
    chunks: int = typer.Option(2000, help="Chunks sampled per embodiment."),
):
    """Fit FAST (DCT + scale/round + BPE) on a store's quantile-normalized action chunks; report quality."""
    from vla.model.fast.fit import fit_store
    from vla.outputs import check_output

    try:
        check_output(out, "a folder of FAST tokenizers")
        report = fit_store(store, out, horizon=horizon, scale=scale, vocab=vocab, chunks=chunks)
    except user_errors() as e:
        fail(str(e))
    typer.echo(json.dumps(report, indent=2))


@bench_app.command("infer")
def bench_infer(
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
    threads: int = typer.Option(2, help="torch CPU threads."),
    reps: int = typer.Option(20, help="Timed repetitions (median reported)."),
    compile: bool = typer.Option(
        True,
        help="Also time pi0 through torch.compile (as `vla serve --compile`); the first "
        "run compiles each preset (minutes on 2 cores), later runs reuse inductor's cache.",
    ),
):
    """Chunk latency (H=50, 10 steps, 2 cams 96x96) for pi0-tiny/pi0-small with and without the prefix
    cache (and compiled), FAST decoding latency, peak memory, parameter counts."""
    from vla.bench.infer import run

    if reps < 1 or threads < 1:
        fail(f"--reps and --threads must be >= 1, got {reps} and {threads}")
    emit(run(threads=threads, reps=reps, compile=compile), json_out)


@bench_app.command("learn")
def bench_learn(
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
    out: Path = typer.Option(Path("runs/bench-learn"), help="Work folder (demos, checkpoints, eval JSON, curves)."),
    minutes: str = typer.Option(
        "15,30,60",
        help="Points of the learning curve, comma-separated training minutes: one run per preset "
        "trains for the largest and keeps its checkpoint at each of the others.",
    ),
    presets: str = typer.Option("pi0-tiny", help="Policy presets to train (names or .toml paths), comma-separated."),
    recipe: str = typer.Option("datasets/builtin.toml", help="Demo recipe (collected once into OUT/demos)."),
    suite: str = typer.Option("builtin", help="Evaluation suite (held-out seeds)."),
    episodes: int = typer.Option(20, help="Evaluation episodes per task and curve point."),
    steps: Optional[int] = typer.Option(None, help="Cap the run at this many steps [default: the clock ends it]."),
    probe: bool = typer.Option(
        True, help="Also run the offline reliance probe and goal check on the final checkpoint."
    ),
):
    """Collect demos of every built-in task, train one multi-task, multi-embodiment policy per preset
    within the time budget, evaluate it at each curve point on held-out seeds with a per-task
    language check (instructions swapped within the task), and draw OUT/learn_curves.png with the
    issue's targets judged in the JSON."""
    from vla.bench.learn import run

    try:
        points = tuple(float(m) for m in _split(minutes))
    except ValueError:
        fail(f"--minutes must be comma-separated numbers, got {minutes!r}")
    if not points or min(points) <= 0:
        fail(f"--minutes must be positive, got {minutes!r}")
    try:
        result = run(
            out,
            presets=tuple(_split(presets)),
            minutes=points,
            recipe=recipe,
            suite=suite,
            episodes=episodes,
            steps=steps,
            probe=probe,
        )
    except user_errors() as e:
        fail(str(e))
    emit(result, json_out)


@bench_app.command("memory")
def bench_memory(
    presets: list[str] = typer.Argument(
        ..., help="Policy presets (names or .toml paths), e.g. pi0-paligemma pi05-paligemma."
    ),
    batch: int = typer.Option(32, help="Global batch size (split over the GPUs of each setup)."),
    grad_checkpoint: bool = typer.Option(True, help="Per-layer gradient checkpointing, as the 3B presets train."),
    markdown: bool = typer.Option(False, help="Print the table as Markdown (the README's) instead of JSON."),
    measure: bool = typer.Option(
        False,
        help="Also run real training steps of the one-GPU setups on random weights "
        "(CUDA if available): step time and peak memory allocated, beside the estimate.",
    ),
    steps: int = typer.Option(3, help="Timed steps per setup with --measure (after one warm-up step)."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
):
    """GPU memory per GPU to train a preset: weights, gradients, AdamW, EMA and activations for a full
    fine-tune (one GPU or DDP; FSDP over 2/4/8), LoRA and a frozen VLM, computed from the model built on
    the meta device (no GPU, no weights). See vla.train.memory for how."""
    from vla.bench.memory import markdown as to_markdown
    from vla.bench.memory import run

    try:
        result = run(presets, batch=batch, grad_checkpoint=grad_checkpoint, measure=measure, steps=steps)
    except user_errors() as e:
        fail(str(e))
    if markdown:
        typer.echo(to_markdown(result))
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result, indent=2) + "\n")
    else:
        emit(result, json_out)


@bench_app.command("probe")
def bench_probe(
    ckpt: Path = typer.Argument(..., help="Checkpoint directory."),
    data: Path = typer.Option(
        ..., help="Episode store to take windows from (e.g. the training demos).", callback=local_store
    ),
    windows: int = typer.Option(256, help="Windows to average the loss over."),
    json_out: Optional[Path] = typer.Option(
        None, "--json", help="Also write the results to this JSON file.", callback=json_path
    ),
):
    """Does a checkpoint use its camera images and its instruction? Training loss on fixed windows
    as recorded vs with another episode's images vs another episode's instruction (no simulation;
    a loss that does not rise means the input is ignored). Also: how far the chunk sampled at each
    demo's first frame ends from where the demo went (`goal`, robot units)."""
    from vla.bench.learn import goal_error, reliance_probe

    try:
        report = reliance_probe(ckpt, data, windows=windows) | {"goal": goal_error(ckpt, data)}
    except user_errors() as e:
        fail(str(e))
    emit(report, json_out)
