"""`gpu_check.py`'s report: min/median/max of a part's rounds and the markdown table of `gpu_check.json`
(standard library only)."""
from __future__ import annotations

import statistics


def mmm(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(stat: dict, digits: int = 0) -> str:
    return f"{stat['median']:.{digits}f} ({stat['min']:.{digits}f}–{stat['max']:.{digits}f})"


def row_line(r: dict) -> str:
    setting = ", ".join(f"{k} {r[k]}" for k in ("read_threads", "workers", "pin_memory") if k in r)
    raw = f"{r['share_of_raw']:.0%}" if "share_of_raw" in r else "—"
    return (f"| {r['loader']} | {setting} | {fmt(r['tracks_per_s'])} | {fmt(r['mb_per_s'])} | "
            f"{r['cpu_s_per_track']['median'] * 1e3:.2f} | {r['peak_rss_mb']['median']:.0f} | {raw} |")


def train_line(r: dict) -> str:
    if "model" not in r:
        return f"| {r['part']} | {r.get('error') or r.get('skipped')} |"
    return (f"| {r['model']} | {r['precision']} | {fmt(r['synthetic_windows_per_s'], 1)} | "
            f"{fmt(r['real_windows_per_s'], 1)} | {r['ratio']:.1%} ({r['ratio_paired']:.1%}) | "
            f"{r.get('peak_gpu_mb', '—')} |")


def markdown(report: dict) -> str:
    env, cfg, mem, s = report["environment"], report["config"], report["memory"], report["syncs"]
    out = [f"# gpu_check: {env['gpu']['name'] or 'no GPU'} ({cfg['device']})", "",
           f"driver {env['gpu']['driver']}, torch {env['torch']}, {env['cpu_count']} CPUs, commit {env['commit']}; "
           f"{cfg['tracks']} tracks, batch {cfg['batch']}, {cfg['rounds']} rounds after a warm-up pass"
           f"{' (--tiny: checks the script, not a measurement)' if cfg['tiny'] else ''}; `{env['command']}`"]
    for key, title in (("host_path", "1. Raw read and host path"), ("device_path", "2. Full path to float windows "
                       "on the device"), ("naive", "3. Naive loader (the notebook's)")):
        part = report[key]
        out += ["", f"## {title}", ""]
        if "rows" not in part:
            out.append(part.get("error") or part.get("skipped"))
            continue
        out += ["| loader | setting | tracks/s median (min–max) | MB/s | CPU ms/track | peak RSS MB | of raw |",
                "|---|---|---|---|---|---|---|"] + [row_line(r) for r in [part.get("raw")] + part["rows"] if r]
        out += ["", "best: " + row_line(part["best"]).split(" | ")[1]]
        if "per_batch" in part:
            b = part["per_batch"]
            out.append(f"device per batch of {b['tracks_per_batch']} ({b['timer']}): copy {b['copy_ms']:.2f} ms, "
                       f"decode + windows {b['decode_windows_ms']:.2f} ms")
        if "fmashard_best_over_naive_best" in part:
            out.append(f"fmashard's best / the naive loader's best: {part['fmashard_best_over_naive_best']:.2f}×")
    out += ["", "## 4. Training throughput (windows/s)", "",
            "| model | precision | synthetic on the device | real shards | real/synthetic (paired) | peak GPU MB |",
            "|---|---|---|---|---|---|"] + [train_line(r) for r in report["training"].get("models", [])]
    syncs = (f"{s['total']} in {s['steps']} steps of {s['model']} (max {s['max_per_step']} in one); {s['sites']}"
             if s.get("measured") else f"not measured: {s.get('reason') or s.get('error') or s.get('skipped')}")
    out += ["", "## 5. Host-device synchronisations per training step", "", syncs, "", "## 6. Memory", "",
            f"peak GPU MB per part: {mem['peak_gpu_mb']}; peak host RSS MB: {mem['peak_rss_mb']} "
            f"(children {mem['peak_rss_children_mb']})", ""]
    return "\n".join(out)
