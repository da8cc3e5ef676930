"""`scale.py`'s rows, each measured in a fresh process (`scale.py --child ROW ...`) so that its peak RSS is its own.

Every figure comes with what is robust to a shared machine beside the wall time: CPU time of this process
(`time.process_time`), peak RSS (`getrusage`), sizes and counts.
"""
from __future__ import annotations

import contextlib
import gc
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import psutil

MB = 1 << 20


class FirstTask(Exception):
    """Raised by the stub engine when the build hands it its shard tasks: planning is over."""


def peak_rss_mb() -> float:
    """This process's peak RSS since it started (VmHWM; getrusage's ru_maxrss keeps the parent's from the fork)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024   # kB


def rss_mb(process: psutil.Process | None = None) -> float:
    return (process or psutil.Process()).memory_info().rss / MB


@contextlib.contextmanager
def clock(out: dict, name: str):
    """out[name + '_s'] wall seconds, out[name + '_cpu_s'] CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:   # also when the block ends by an exception (the stub engine's FirstTask)
        out[f"{name}_s"] = round(time.perf_counter() - wall, 4)
        out[f"{name}_cpu_s"] = round(time.process_time() - cpu, 4)


# ---------------------------------------------------------------------------------------- planning
def planning(fma_dir: str, long_tracks: str, work: str) -> dict:
    """`fmashard fma-info` (load_selection) and `fmashard build --subset full` up to the first shard task."""
    from shard_tools import build
    from shard_tools.build import BuildConfig, build_shards
    from shard_tools.fma_metadata import load_selection

    row = {"rss_after_imports_mb": round(rss_mb(), 1)}
    with clock(row, "fma_info"):
        selection = load_selection(fma_dir, "full")
    row["selected_tracks"] = selection.num_tracks
    del selection
    gc.collect()

    @contextlib.contextmanager
    def first_task(tasks, config, out, advance):
        raise FirstTask(len(tasks), sum(len(t.plan.tracks) for t in tasks))
        yield   # a context manager, like the real engines

    build.ENGINES["local"] = first_task
    out = Path(work) / f"plan-out-{long_tracks}"
    shutil.rmtree(out, ignore_errors=True)
    config = BuildConfig(fma_dir=fma_dir, subset="full", out=str(out), long_tracks=long_tracks, workers=2)
    try:
        with clock(row, "plan"):
            build_shards(config)
    except FirstTask as first:
        row["shard_tasks"], row["planned_tracks"] = first.args
    shutil.rmtree(out, ignore_errors=True)
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return row


# ---------------------------------------------------------------------------------------- manifest
def manifest(manifest_path: str, rounds: int) -> dict:
    """Written size; write (dump + atomic write), read + validate (`load_manifest`) and the loader's reader
    (`resolve_source`: load, check every path, build the DatasetSpec), best and median of `rounds`."""
    import tracemalloc

    from fmashard import storage
    from fmashard.data.sources import resolve_source
    from fmashard.format.manifest import dump_manifest, load_manifest

    path = Path(manifest_path)
    row = {"bytes": path.stat().st_size, "rss_before_mb": round(rss_mb(), 1)}
    parsed = load_manifest(str(path))
    copy = path.with_name("manifest-copy.json")
    steps = {"write": lambda: storage.write_bytes_atomic(str(copy), dump_manifest(parsed).encode()),
             "load_manifest": lambda: load_manifest(str(path)),
             "resolve_source": lambda: resolve_source(str(path), "training")}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(_timed(step))
        copy.unlink()
    for name, values in times.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        row[f"{name}_s"], row[f"{name}_median_s"] = round(min(walls), 4), round(statistics.median(walls), 4)
        row[f"{name}_cpu_s"] = round(min(cpus), 4)
    parsed = None
    gc.collect()
    tracemalloc.start()
    spec = resolve_source(str(path), "training")
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row["spec_held_mb"], row["spec_peak_mb"] = round(held / MB, 2), round(peak / MB, 2)
    row["shards"], row["samples"] = len(spec.shards), spec.num_samples
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return row


def _timed(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


# ---------------------------------------------------------------------------------------- loader
def loader(manifest_path: str, worlds: list[int], workers: int, batch_size: int, checkpoint_dir: str,
           rounds: int = 1) -> dict:
    """Per world size: every rank's plan (computed here, one rank after another), equal batches and an exact
    epoch over all ranks; a real ShardLoader with `workers` DataLoader workers on the first and the last rank,
    `rounds` times each (time to the first batch, main and per-worker memory); the loader state's checkpoint."""
    from fmashard.data.sources import resolve_source

    row = {"rss_before_mb": round(rss_mb(), 1)}
    with clock(row, "resolve_source"):
        spec = resolve_source(manifest_path, "training")
    row["rss_spec_mb"] = round(rss_mb(), 1)
    row["shards"], row["samples"] = len(spec.shards), spec.num_samples
    # the real loaders first: their workers fork this process, so they must not inherit the simulation's memory
    row["worlds"] = {str(world): {"first_batch": [first_batch(spec, rank, world, workers, batch_size)
                                                  for rank in sorted({0, world - 1}) for _ in range(rounds)]}
                     for world in worlds}
    for world in worlds:
        row["worlds"][str(world)].update(plan_ranks(spec, world, workers, batch_size))
        row["worlds"][str(world)]["checkpoint"] = checkpoint(spec, world, workers, batch_size, Path(checkpoint_dir))
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return row


def _config(rank: int, world: int, workers: int, batch_size: int):
    from fmashard.data.loader import LoaderConfig

    return LoaderConfig(batch_size=batch_size, shuffle=True, seed=0, rank=rank, world_size=world,
                        num_workers=workers, pin_memory=False)


def plan_ranks(spec, world: int, workers: int, batch_size: int) -> dict:
    """Each rank's epoch plan (its workers' `worker_plan`, then the walk over every ordinal the loader makes
    while it streams, reads left out): CPU seconds per rank; the checks of equal ranks and an exact epoch."""
    from fmashard.data.loader import ShardLoader
    from fmashard.data.plan import worker_plan

    cfg = _config(0, world, workers, batch_size)
    offsets = dict(zip((s.url for s in spec.shards), np.cumsum([0] + [s.num_samples for s in spec.shards])))
    seen = np.zeros(spec.num_samples, dtype=np.uint8)
    plan_cpu, walk_cpu, lengths, batches_ok = [], [], set(), True
    for rank in range(world):
        lengths.add(len(ShardLoader(spec, _config(rank, world, workers, batch_size))))
        plan_s = walk_s = 0.0
        for worker in range(workers):
            cpu = time.process_time()
            plan = worker_plan(spec, cfg.plan_config(), 0, rank, world, worker, workers)
            plan_s += time.process_time() - cpu
            walk_s += walk(spec, plan)
            for seg in plan.segments:
                seen[offsets[seg.url] + seg.first: offsets[seg.url] + seg.first + seg.count] += 1
            sizes = [size for _, _, size in plan.batches.full]
            batches_ok &= sum(sizes) == plan.num_samples and all(s == batch_size for s in sizes[:-1])
        plan_cpu.append(plan_s)
        walk_cpu.append(walk_s)
    read_once = int((seen == 1).sum())
    return {"plan_memory": plan_memory(spec, cfg.plan_config(), world, workers),
            "plan_cpu_s_max": round(max(plan_cpu), 4), "plan_cpu_s_mean": round(statistics.mean(plan_cpu), 4),
            "walk_cpu_s_max": round(max(walk_cpu), 4), "walk_cpu_s_mean": round(statistics.mean(walk_cpu), 4),
            "batches_per_rank": sorted(lengths), "equal_batches": len(lengths) == 1,
            "samples_read_once": read_once, "samples_read_twice": int((seen > 1).sum()),
            "exact_epoch": bool(read_once == world * (spec.num_samples // world) and (seen <= 1).all()
                                and batches_ok)}


def plan_memory(spec, plan_config, world: int, workers: int) -> dict:
    """What rank 0's worker 0 allocates for its plan (tracemalloc: peak while planning, held after), in MB."""
    import tracemalloc

    from fmashard.data.plan import worker_plan

    tracemalloc.start()
    plan = worker_plan(spec, plan_config, 0, 0, world, 0, workers)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"samples": plan.num_samples, "peak_mb": round(peak / MB, 2), "held_mb": round(held / MB, 2)}


def walk(spec, plan) -> float:
    """CPU seconds of `WorkerStream._arrivals` over all of a worker's ordinals with the reads left out: what
    the loader's plan costs it per epoch besides `worker_plan` (grouping ordinals into runs of one segment)."""
    from fmashard.data.loader import WorkerStream
    from fmashard.errors import ErrorPolicy

    class PlanWalk(WorkerStream):
        def _read_run(self, run, *where):
            yield from run

    stream = PlanWalk(spec, plan, ErrorPolicy("raise"), None)
    cpu = time.process_time()
    for _ in stream._arrivals(range(plan.num_samples)):
        pass
    return time.process_time() - cpu


def first_batch(spec, rank: int, world: int, workers: int, batch_size: int) -> dict:
    """A real ShardLoader of this rank: seconds from its construction to its first batch; then, once every
    worker has delivered two batches (each has planned its epoch and filled its shuffle buffer), the RSS of the
    main process and of each DataLoader worker (rss; uss: pages only that worker holds; pss)."""
    from fmashard.data.loader import ShardLoader

    me = psutil.Process()
    wall, cpu = time.perf_counter(), time.process_time()
    shard_loader = ShardLoader(spec, _config(rank, world, workers, batch_size))
    batches = iter(shard_loader)
    batch = next(batches)
    out = {"rank": rank, "seconds": round(time.perf_counter() - wall, 4),
           "main_cpu_s": round(time.process_time() - cpu, 4), "batch": len(batch)}
    for _ in range(2 * workers - 1):
        batch = next(batches)
    out["main_rss_mb"] = round(rss_mb(me), 1)
    children = me.children()
    infos = [child.memory_full_info() for child in children]
    out["worker_rss_mb"] = [round(i.rss / MB, 1) for i in infos]
    out["worker_uss_mb"] = [round(i.uss / MB, 1) for i in infos]
    out["worker_pss_mb"] = [round(i.pss / MB, 1) for i in infos]
    del batch
    batches.close()
    del batches, shard_loader
    gc.collect()
    psutil.wait_procs(children, timeout=30)
    return out


def checkpoint(spec, world: int, workers: int, batch_size: int, folder: Path) -> dict:
    """The loader state a training checkpoint holds (rank 0, mid-epoch), saved and loaded on its own."""
    from fmashard.data.loader import ShardLoader
    from fmashard.train.checkpoint import load_checkpoint, save_checkpoint

    shard_loader = ShardLoader(spec, _config(0, world, workers, batch_size))
    state = {**shard_loader.state_dict(), "epoch": 3, "batches": len(shard_loader) // 2}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"loader-{world}.pt"
    out = {}
    with clock(out, "save"):
        save_checkpoint(path, {"loader": state})
    with clock(out, "load"):
        loaded = load_checkpoint(path, required=("loader",))
    fresh = ShardLoader(spec, _config(0, world, workers, batch_size))
    fresh.load_state_dict(loaded["loader"])
    out.update(bytes=path.stat().st_size, resumes_at=fresh.delivered, state_keys=len(state))
    return out


# ---------------------------------------------------------------------------------------- ray
def ray_build(table_dir: str, sizes: list[int], workers: int, work: str, engines: list[str]) -> dict:
    """`fmashard build --corpus` of `size` 1-s tracks, one track per shard (`--clip-seconds 1 --min-seconds 0.5`,
    a shard size of one record), with each engine; Ray is started once, before the builds (its start is timed
    apart)."""
    import logging

    import ray

    from fmashard.format.tar import END_OF_ARCHIVE, record_bytes
    from shard_tools.build import BuildConfig, build_shards

    row: dict = {}
    if "ray" in engines:
        with clock(row, "ray_start"):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    shard_size = record_bytes(22_050 * 2) + len(END_OF_ARCHIVE)   # one record per shard
    warmups = [(min(sizes), engine) for engine in engines]       # Ray's workers start, the pool's modules load
    row["warmup"], row["builds"] = [], []
    for n, (size, engine) in enumerate(warmups + [(size, engine) for size in sizes for engine in engines]):
        out = Path(work) / f"ray-out-{engine}-{size}"
        shutil.rmtree(out, ignore_errors=True)
        config = BuildConfig(corpus=str(Path(table_dir) / f"tracks-{size}.csv"), out=str(out), clip_seconds=1.0,
                             min_seconds=0.5, shard_size=shard_size, workers=workers, engine=engine)
        build = {"engine": engine, "tracks": size}
        with clock(build, "build"):
            report = build_shards(config)
        build.update(shards=report.shards_built, tracks_written=report.tracks_written)
        row["warmup" if n < len(warmups) else "builds"].append(build)
        shutil.rmtree(out, ignore_errors=True)
    if "ray" in engines:
        ray.shutdown()
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return row
