"""`fmashard bench`: every loader side by side against the naive per-file loader."""
from __future__ import annotations

import typer

from fmashard.cli import app


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@app.command("bench")
def bench_command(
    shards: str = typer.Option(..., "--shards", help="Shards: manifest, folder, URL pattern, s3://…"),
    naive: str | None = typer.Option(None, "--naive", help="A `--layout files` build (the naive .pt loader)."),
    fma_dir: str | None = typer.Option(None, "--fma-dir", help="FMA folder, for the naive-mp3 loader."),
    loaders: str | None = typer.Option(
        None, "--loaders", help="Comma list of: raw, fmashard-host, fmashard-host-crc (fmashard-host + check_crc), "
                                "fmashard, dali, naive, naive-mp3, fmashard-logmel (log-mel features on the "
                                "device), naive-logmel (the .pt Dataset + the same mel on the CPU in __getitem__; "
                                "needs --naive).  Default: naive-mp3 (when --fma-dir is given), "
                                "naive, fmashard-host, fmashard, raw."),
    workers: str = typer.Option("0", "--workers", help="Comma list of DataLoader worker counts."),
    batch_size: int = typer.Option(8, "--batch-size", help="Tracks per batch."),
    rounds: int = typer.Option(5, "--rounds", help="Timed rounds after one warm-up round."),
    min_seconds: float = typer.Option(1.0, "--min-seconds",
                                      help="In each round a loader repeats its pass until it ran this long."),
    device: str = typer.Option("auto", "--device", help="auto, cuda or cpu."),
    split: str = typer.Option("training", "--split"),
    max_tracks: int | None = typer.Option(None, "--max-tracks", help="Stop every loader after this many tracks."),
    with_model: str | None = typer.Option(None, "--with-model", help="Also measure training throughput of a model."),
    amp: bool = typer.Option(False, "--amp", help="bf16 autocast for --with-model."),
    json_out: str | None = typer.Option(None, "--json", help="Write the full report as JSON here."),
    plot_out: str | None = typer.Option(None, "--plot", help="Write a bar chart (PNG) here."),
    endpoint_url: str | None = typer.Option(None, "--endpoint-url", help="S3 endpoint (else AWS_ENDPOINT_URL)."),
) -> None:
    """Samples/sec of every loader side by side, with the physical limit (raw read) beside them."""
    from fmashard.bench.config import BenchConfig
    from fmashard.bench.report import plot, print_table
    from fmashard.bench.runner import check_same_tracks, run_bench
    from fmashard.storage import set_endpoint_url, write_json

    set_endpoint_url(endpoint_url)
    try:
        worker_counts = tuple(int(w) for w in _csv(workers))
    except ValueError:
        raise typer.BadParameter("comma-separated integers, e.g. 0,1,2", param_hint="--workers") from None
    config = BenchConfig(shards=shards, naive=naive, fma_dir=fma_dir, loaders=_csv(loaders) if loaders else None,
                         workers=worker_counts, batch_size=batch_size, rounds=rounds, device=device, split=split,
                         max_tracks=max_tracks, with_model=with_model, amp=amp, min_seconds=min_seconds)
    report = run_bench(config, log=lambda msg: typer.echo(msg, err=True))
    check_same_tracks(report)
    print_table(report)
    if json_out:
        write_json(json_out, report)
        typer.echo(f"wrote {json_out}")
    if plot_out:
        typer.echo(f"wrote {plot(report, plot_out)}")
