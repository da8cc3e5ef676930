"""Variants of the default recipe on the overlap corpus of `recipe.py`: how the defaults were chosen.

    .venv/bin/python benchmarks/recipe_sweep.py --epochs 8 --variants '{"crop_gain_polarity": {"random_crop": true,
        "augment": "gain=6,polarity"}, "crop_mixup": {"random_crop": true, "augment": "gain=6,polarity,mixup=0.2"}}'

Method: each variant is `recipe.RUN` (resnet1d, 1-s windows, 2 per track, batch 8, seed 0) with the variant's
TrainConfig fields over the defaults (a variant may set `lr`), on `recipe.py`'s overlap corpus (built there when
missing); the variants train in parallel processes of one torch thread each.  Recorded: each epoch's
validation track accuracy (mean logits and vote), validation and training loss, and the variant's fields, in
`results/recipe_sweep.json` (runs are appended under their names with the command and commit).
"""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import recipe  # noqa: E402


def one(shards: Path, out: Path, epochs: int, fields: dict) -> dict:
    fields = dict(fields)
    recipe.RUN.update({key: fields.pop(key) for key in list(fields) if key in recipe.RUN})
    return recipe.run(shards, out, epochs, fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--variants", required=True, help="JSON: {name: {TrainConfig field: value}}")
    parser.add_argument("--work", default="/tmp/fmashard-recipe")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "recipe_sweep.json"))
    args = parser.parse_args()
    variants, work = json.loads(args.variants), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shards = recipe.build("overlap", recipe.overlap_corpus(work), work)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {"corpus": "overlap (recipe.py)", "runs": {}}
    command = "python benchmarks/recipe_sweep.py " + " ".join(sys.argv[1:])
    with ProcessPoolExecutor(len(variants), mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(one, shards, work / f"sweep-{name}", args.epochs, fields)
                   for name, fields in variants.items()}
        for name, future in futures.items():
            result = future.result()
            report["runs"][name] = {"fields": variants[name], "epochs": args.epochs, "command": command,
                                    "commit": recipe.git("rev-parse", "HEAD"), **result}
            print(name, json.dumps(result["per_epoch"]["val_track_acc_mean"]), flush=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
