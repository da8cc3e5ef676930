"""`fmashard train` and `fmashard evaluate`: thin wrappers over fmashard.train / fmashard.train.evaluate.

Under `torchrun --nproc-per-node N -m fmashard train ...` the same command trains with DDP."""
import os

import typer

from fmashard.cli import app

AUGMENT_SYNTAX = "gain[=DB],polarity[=P],mixup[=ALPHA]"   # fmashard.data.transforms.AUGMENT_SYNTAX (torch-free here)
DEFAULT_AUGMENT = "gain=6,polarity"                       # fmashard.train.config.DEFAULT_AUGMENT (tests/test_optim)
NONFINITE_LIMIT = 10   # fmashard.train.guard.NONFINITE_LIMIT (torch-free here; tests/test_guard)
NOTEBOOK_FLAGS = "--optimizer adam --lr-schedule none --augment none --no-random-crop --precise-bn 0"  # test_optim


@app.command("train")
def train(
    shards: str = typer.Option(..., "--shards", help="Manifest, build folder or URL (s3://, https://) of the shards."),
    out: str = typer.Option(..., "--out", help="RUN_DIR: config.json, metrics.jsonl, last.pt, best.pt."),
    model: str = typer.Option("resnet1d", help="resnet1d, soundnet, soundnet-large (waveforms) or melcnn (log-mel)."),
    epochs: int = typer.Option(10, help="Epochs over the training split."),
    batch_size: int = typer.Option(8, help="Tracks per optimizer step (all their windows go in one step)."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (the schedule's top; constant with --lr-schedule none)."),
    optimizer: str = typer.Option("adamw", help="adamw (decoupled weight decay) or adam (the notebook's plain "
                                  "Adam)."),
    weight_decay: float | None = typer.Option(None, help="Weight decay; default 0.05 with adamw, 0 with adam (with "
                                              "adam: an L2 penalty). Never on BatchNorm weights or biases."),
    lr_schedule: str = typer.Option("cosine", help="cosine (linear warm-up, then a half cosine to 0 at the last "
                                    "step), onecycle (torch's OneCycleLR: lr/25 up, lr/25e4 at the end) or none. "
                                    "It spans --epochs (--max-steps only stops early) and is set from the global "
                                    "step, so --resume follows it exactly."),
    warmup: float = typer.Option(0.05, help="Warm-up of the schedule: a fraction of the run's steps in [0, 1), or "
                                 "a whole number >= 1 of steps."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (torch.autocast)."),
    amp_dtype: str = typer.Option("auto", help="auto (bf16 where supported, else fp16 + GradScaler), bf16, fp16."),
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
    workers: int = typer.Option(0, help="DataLoader worker processes (0: read in this process). For CPU-heavy "
                                "per-sample work (--check-crc, host codecs): it leaves the training process "
                                "(crc: 1.0 -> 0.2 CPU ms/track there); I/O alone needs none."),
    read_threads: int = typer.Option(2, help="Threads reading records at once, per process: the I/O (2 reach "
                                             "~90% of a raw read locally; more for object storage)."),
    random_crop: bool = typer.Option(True, "--random-crop/--no-random-crop",
                                     help="Random window starts in training (evaluation: fixed hops)."),
    augment: str = typer.Option(DEFAULT_AUGMENT, help=f"Training augmentations on the device, comma-separated: "
                                f"{AUGMENT_SYNTAX} (default {DEFAULT_AUGMENT}: random gain of +-6 dB and a random "
                                "sign; add mixup=0.2 for mixup with Beta(0.2, 0.2) and mixed labels; none: off); "
                                "evaluation never augments."),
    features: str | None = typer.Option(None, help="wave or logmel (128-band log-mel spectrogram computed on the "
                                        "device); default: what --model takes."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model."),
    seed: int = typer.Option(0, help="Seed of the model init, the shuffle and the crops."),
    window_seconds: float = typer.Option(5.0, help="Window length in seconds."),
    windows: int = typer.Option(7, help="Windows per track."),
    overlap: float = typer.Option(0.25, help="Overlap of consecutive windows, in [0, 1)."),
    shuffle_buffer: int = typer.Option(64, help="Samples in the loader's shuffle buffer."),
    precise_bn: int = typer.Option(8, help="Re-estimate BatchNorm statistics on N training batches before each "
                                           "validation (N forward passes; 0: off)."),
    max_steps: int | None = typer.Option(None, help="Stop after this many optimizer steps (whole run)."),
    checkpoint_every: int = typer.Option(200, help="Steps between mid-epoch last.pt saves (0: epoch ends only)."),
    on_error: str = typer.Option("raise", help="raise or skip corrupt samples."),
    max_nonfinite_steps: int = typer.Option(NONFINITE_LIMIT, help="A step whose loss or gradients are not finite "
                                            "is skipped (weights and optimizer unchanged) and counted; this many "
                                            "in a row stop the run with one line and exit 2."),
    check_crc: bool = typer.Option(False, "--check-crc", help="Check each sample's audio against the crc32 the "
                                   "build recorded (untrusted or flaky storage); a mismatch is a corrupt sample."),
    endpoint_url: str | None = typer.Option(None, help="S3 endpoint (sets AWS_ENDPOINT_URL)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last.pt."),
    log_batches: bool = typer.Option(False, "--log-batches", help="Write RUN_DIR/steps.jsonl (track ids per step)."),
) -> None:
    """Train a genre classifier on the shards: one optimizer step per batch of tracks.

    Default recipe: AdamW (weight decay 0.05), linear warm-up over 5% of the steps then cosine, random crops,
    gain and polarity augmentations, BatchNorm recalibrated on 8 batches before each validation.  The notebook's
    recipe: --optimizer adam --lr-schedule none --augment none --no-random-crop --precise-bn 0.

    best.pt: the epoch with the highest validation track accuracy by mean logits averaged over it and the 2
    epochs before it (fewer at the start); a tie goes to the lower validation loss.  A build without validation
    tracks trains with a note: last.pt only.
    """
    from fmashard.storage import set_endpoint_url
    from fmashard.train import TrainConfig
    from fmashard.train import train as run_training

    set_endpoint_url(endpoint_url)

    config = TrainConfig(shards=shards, out=out, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                         optimizer=optimizer, weight_decay=weight_decay, lr_schedule=lr_schedule, warmup=warmup,
                         amp=amp, amp_dtype=amp_dtype, device=device, workers=workers, read_threads=read_threads,
                         random_crop=random_crop, augment=augment, features=features,
                         compile=compile, seed=seed, window_seconds=window_seconds, windows=windows,
                         overlap=overlap, shuffle_buffer=shuffle_buffer, precise_bn=precise_bn, max_steps=max_steps,
                         checkpoint_every=checkpoint_every, on_error=on_error, check_crc=check_crc,
                         max_nonfinite_steps=max_nonfinite_steps,
                         endpoint_url=endpoint_url,
                         resume=resume, log_batches=log_batches)
    _note_workers(workers, check_crc)
    result = run_training(config)  # prints one line per epoch and the summary (rank 0)
    if result.interrupted:
        raise typer.Exit(130)


@app.command("evaluate")
def evaluate(
    checkpoint: str = typer.Option(..., "--checkpoint", help="A last.pt or best.pt of `fmashard train`."),
    shards: str = typer.Option(..., "--shards", help="Manifest, build folder or URL of the shards."),
    split: str = typer.Option("test", help="Split to evaluate: test, validation or training."),
    out: str | None = typer.Option(None, "--out", help="Folder for the metrics and confusion matrix "
                                                      "(default: the checkpoint's folder)."),
    batch_size: int = typer.Option(8, help="Tracks per forward pass."),
    device: str = typer.Option("auto", help="auto, cuda or cpu."),
    workers: int = typer.Option(0, help="DataLoader worker processes (for --check-crc; the I/O needs none)."),
    amp: bool | None = typer.Option(None, "--amp/--no-amp", help="Mixed precision (default: as trained)."),
    on_error: str = typer.Option("raise", help="raise or skip corrupt samples."),
    check_crc: bool = typer.Option(False, "--check-crc", help="Check each sample's audio against the crc32 the "
                                   "build recorded (untrusted or flaky storage); a mismatch is a corrupt sample."),
    endpoint_url: str | None = typer.Option(None, help="S3 endpoint (sets AWS_ENDPOINT_URL)."),
) -> None:
    """Loss, window accuracy, track accuracy (majority vote, mean logits) and a confusion matrix (JSON, PNG)."""
    from fmashard.storage import set_endpoint_url
    from fmashard.train import EvaluateConfig, evaluate_checkpoint

    set_endpoint_url(endpoint_url)

    config = EvaluateConfig(checkpoint=checkpoint, shards=shards, split=split, out=out, batch_size=batch_size,
                            device=device, workers=workers, amp=amp, on_error=on_error, check_crc=check_crc,
                            endpoint_url=endpoint_url)
    _note_workers(workers, check_crc)
    report = evaluate_checkpoint(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        print(report.summary())
        print("wrote " + ", ".join(report.files.values()))


def _note_workers(workers: int, check_crc: bool) -> None:
    """`--workers` without per-sample CPU work to spread: say once what they are for (stdout, rank 0)."""
    if workers and not check_crc and os.environ.get("RANK", "0") == "0":
        from fmashard.data.loader import WORKERS_NOTE

        print("note: " + WORKERS_NOTE.format(n=workers), flush=True)
