"""`scale.py`'s summary: each curve with its growth exponent per step, the issue's goals at the largest size,
and one PNG per part."""
from __future__ import annotations

import math
import statistics

GOALS = {"planning_s": 30.0, "planning_peak_mb": 2048.0, "first_batch_s": 2.0, "worker_growth_mb": 50.0,
         "manifest_read_s": 1.0, "checkpoint_bytes": float(1 << 20)}
SUPERLINEAR = 1.25     # a step growing faster than size**1.25 is superlinear (the allowance is for noise)
FLOORS = {"s": 0.05, "mb": 5.0, "bytes": 4096.0}   # below these a step's ratio is noise, not growth


def exponents(xs: list[float], ys: list[float]) -> list[float | None]:
    """log(y2/y1) / log(x2/x1) per step: 1 is linear, 0 flat; None where a value is 0 or below."""
    steps = []
    for (x1, y1), (x2, y2) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        steps.append(round(math.log(y2 / y1) / math.log(x2 / x1), 2) if y1 > 0 and y2 > 0 else None)
    return steps


def curve(name: str, x_name: str, xs: list, ys: list, unit: str) -> dict:
    steps = exponents(xs, ys)
    floor = FLOORS.get(unit, 0.0)
    superlinear = [i for i, e in enumerate(steps) if e is not None and e > SUPERLINEAR and ys[i + 1] >= floor]
    return {"name": name, "x": x_name, "xs": xs, "ys": ys, "unit": unit, "exponents": steps,
            "superlinear_steps": [f"{xs[i]}->{xs[i + 1]}" for i in superlinear]}


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def planning_curves(rows: list[dict]) -> list[dict]:
    curves = []
    for mode in ("first", "all"):
        mine = [r for r in rows if r["long_tracks"] == mode]
        xs = [r["rows"] for r in mine]
        curves += [curve(f"planning {mode}: build up to the first task, CPU", "rows", xs,
                         [r["plan_cpu_s"] for r in mine], "s"),
                   curve(f"planning {mode}: peak RSS above imports", "rows", xs,
                         [round(r["peak_rss_mb"] - r["rss_after_imports_mb"], 1) for r in mine], "mb")]
    first = [r for r in rows if r["long_tracks"] == "first"]
    curves.append(curve("fma-info, CPU", "rows", [r["rows"] for r in first], [r["fma_info_cpu_s"] for r in first], "s"))
    return curves


def manifest_curves(rows: list[dict]) -> list[dict]:
    xs = [r["shards"] for r in rows]
    return [curve("manifest bytes", "shards", xs, [r["bytes"] for r in rows], "bytes"),
            curve("manifest write, CPU", "shards", xs, [r["write_cpu_s"] for r in rows], "s"),
            curve("manifest read + validate (load_manifest), CPU", "shards", xs,
                  [r["load_manifest_cpu_s"] for r in rows], "s"),
            curve("manifest -> DatasetSpec (resolve_source), CPU", "shards", xs,
                  [r["resolve_source_cpu_s"] for r in rows], "s"),
            curve("DatasetSpec memory held (tracemalloc)", "shards", xs, [r["spec_held_mb"] for r in rows], "mb"),
            curve("manifest -> DatasetSpec peak memory (tracemalloc)", "shards", xs,
                  [r["spec_peak_mb"] for r in rows], "mb")]


def loader_curves(rows: list[dict]) -> list[dict]:
    xs, curves = [r["samples"] for r in rows], []
    for world in rows[0]["worlds"]:
        entries = [r["worlds"][world] for r in rows]
        curves += [
            curve(f"{world} ranks: plan CPU per rank (worker_plan)", "samples", xs,
                  [e["plan_cpu_s_max"] for e in entries], "s"),
            curve(f"{world} ranks: plan walk CPU per rank (per epoch, reads left out)", "samples", xs,
                  [e["walk_cpu_s_max"] for e in entries], "s"),
            curve(f"{world} ranks: time to first batch (median of starts, max of ranks)", "samples", xs,
                  [first_batch_s(e) for e in entries], "s"),
            curve(f"{world} ranks: worker RSS (median)", "samples", xs,
                  [_median([m for f in e["first_batch"] for m in f["worker_rss_mb"]]) for e in entries], "mb"),
            curve(f"{world} ranks: worker USS (median)", "samples", xs,
                  [_median([m for f in e["first_batch"] for m in f["worker_uss_mb"]]) for e in entries], "mb"),
            curve(f"{world} ranks: plan memory peak per worker (tracemalloc)", "samples", xs,
                  [e["plan_memory"]["peak_mb"] for e in entries], "mb"),
            curve(f"{world} ranks: checkpoint bytes", "samples", xs, [e["checkpoint"]["bytes"] for e in entries],
                  "bytes")]
    curves.append(curve("main process RSS with the DatasetSpec", "samples", xs,
                        [round(r["rss_spec_mb"] - r["rss_before_mb"], 1) for r in rows], "mb"))
    return curves


def ray_curves(row: dict) -> list[dict]:
    curves = []
    for engine in sorted({b["engine"] for b in row["builds"]}):
        builds = [b for b in row["builds"] if b["engine"] == engine]
        xs = [b["shards"] for b in builds]
        curves += [curve(f"{engine}: build wall", "shards", xs, [b["build_s"] for b in builds], "s"),
                   curve(f"{engine}: driver CPU", "shards", xs, [b["build_cpu_s"] for b in builds], "s")]
    return curves


def ray_overheads(row: dict) -> dict:
    """Seconds per shard of each engine, the marginal second per shard between sizes, ray minus local."""
    by = {(b["engine"], b["shards"]): b for b in row["builds"]}
    sizes = sorted({b["shards"] for b in row["builds"]})
    out = {}
    for engine in sorted({b["engine"] for b in row["builds"]}):
        walls = [by[engine, n]["build_s"] for n in sizes]
        out[engine] = {"per_shard_s": [round(w / n, 4) for w, n in zip(walls, sizes)],
                       "marginal_per_shard_s": [round((w2 - w1) / (n2 - n1), 4) for w1, w2, n1, n2
                                                in zip(walls, walls[1:], sizes, sizes[1:])]}
    if {"ray", "local"} <= set(out):
        out["ray_minus_local_per_shard_s"] = [round((by["ray", n]["build_s"] - by["local", n]["build_s"]) / n, 4)
                                              for n in sizes]
    return out


def goals(results: dict) -> dict:
    found = {}
    if results.get("planning"):
        top = [r for r in results["planning"] if r["rows"] == max(x["rows"] for x in results["planning"])]
        found["planning_s"] = max(max(r["plan_s"], r["fma_info_s"]) for r in top)
        found["planning_peak_mb"] = max(r["peak_rss_mb"] for r in top)
    if results.get("manifest"):
        found["manifest_read_s"] = results["manifest"][-1]["resolve_source_s"]
    if results.get("loader"):
        small, large = results["loader"][0], results["loader"][-1]
        found["first_batch_s"] = max(first_batch_s(e) for e in large["worlds"].values())
        found["worker_growth_mb"] = max(_worker_growth(small, large, world, key)
                                        for world in large["worlds"] for key in ("worker_rss_mb", "worker_uss_mb"))
        found["checkpoint_bytes"] = max(e["checkpoint"]["bytes"] for r in results["loader"]
                                        for e in r["worlds"].values())
    return {name: {"value": round(value, 4), "limit": GOALS[name], "met": value <= GOALS[name]}
            for name, value in found.items()}


def first_batch_s(entry: dict) -> float:
    """The slowest rank's median time to its first batch over its starts."""
    ranks = {f["rank"] for f in entry["first_batch"]}
    return max(_median([f["seconds"] for f in entry["first_batch"] if f["rank"] == r]) for r in ranks)


def _worker_growth(small: dict, large: dict, world: str, key: str) -> float:
    values = [_median([m for f in r["worlds"][world]["first_batch"] for m in f[key]]) for r in (small, large)]
    return values[1] - values[0]


def summarize(results: dict) -> dict:
    curves = []
    for part, make in (("planning", planning_curves), ("manifest", manifest_curves), ("loader", loader_curves),
                       ("ray", ray_curves)):
        if results.get(part):
            curves += [{"part": part, **c} for c in make(results[part])]
    summary = {"curves": curves, "goals": goals(results),
               "superlinear": [f"{c['name']}: {', '.join(c['superlinear_steps'])}" for c in curves
                               if c["superlinear_steps"]]}
    if results.get("ray"):
        summary["ray"] = ray_overheads(results["ray"])
    return summary


def write_plots(results: dict, stem) -> list[str]:
    """stem_<part>.png: every curve of the part against its size, log-log, one panel per unit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for part in ("planning", "manifest", "loader", "ray"):
        curves = [c for c in results["summary"]["curves"] if c["part"] == part]
        if not curves:
            continue
        units = sorted({c["unit"] for c in curves})
        fig, axes = plt.subplots(1, len(units), figsize=(6.5 * len(units), 4.8), squeeze=False)
        for ax, unit in zip(axes[0], units):
            for c in (c for c in curves if c["unit"] == unit):
                ax.plot(c["xs"], [max(y, 1e-5) for y in c["ys"]], marker="o", label=c["name"])
            ax.set(xscale="log", yscale="log", xlabel=curves[0]["x"], ylabel={"s": "seconds", "mb": "MB",
                   "bytes": "bytes"}[unit], title=f"{part}: {unit}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle(f"fmashard scale: {part} ({results['environment']['commit'][:12]})")
        fig.tight_layout()
        path = f"{stem}_{part}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
