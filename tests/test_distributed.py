"""DDP under torchrun (gloo, 2 CPU processes) and the single-process behaviour of the helpers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fmashard.train.checkpoint import load_checkpoint
from fmashard.train.distributed import all_gather_int, all_reduce_sum, any_rank, broadcast_buffers, init_distributed
from fmashard.train.run_dir import read_jsonl
from test_checkpoint import write_run_shards

TORCHRUN = Path(sys.executable).with_name("torchrun")


def test_without_torchrun_everything_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist = init_distributed("cpu")
    assert (dist.rank, dist.world_size, dist.is_main, dist.is_distributed) == (0, 1, True, False)
    t = torch.tensor([1.0, 2.0])
    assert all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert all_gather_int(5, dist.device) == [5]
    assert any_rank(True, dist.device) and not any_rank(False, dist.device)
    broadcast_buffers(torch.nn.BatchNorm1d(2))
    dist.close()


@pytest.mark.dist
def test_two_gloo_ranks_take_the_same_number_of_steps(tmp_path):
    # 7 training tracks over 2 ranks (4 + 3): equal_ranks gives both 2 batches of 2 tracks;
    # 3 validation tracks (2 + 1): each rank evaluates its own, the sums are exact.
    shards = write_run_shards(tmp_path / "shards", {"training": [2, 1, 2, 2], "validation": [2, 1]})
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "fmashard", "train", "--shards", str(shards),
         "--out", str(run), "--model", "soundnet-large", "--window-seconds", "0.1", "--windows", "2",
         "--batch-size", "2", "--epochs", "1", "--device", "cpu", "--log-batches"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(run / "metrics.jsonl")
    assert len(records) == 1
    record = records[0]
    assert record["world_size"] == 2 and record["steps_per_rank"] == [2, 2]
    assert record["step"] == 2 and record["val_tracks"] == 3
    # only rank 0 prints and writes
    assert sum(line.startswith("epoch 1/1") for line in result.stdout.splitlines()) == 1
    assert len(read_jsonl(run / "steps.jsonl")) == 2
    state = load_checkpoint(run / "last.pt")
    assert state["loader"]["world_size"] == 2 and state["step"] == 2
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
