"""`fmashard bench --with-model`: end-to-end training throughput on real shards against the ceiling
of synthetic batches already on the device (same model, batch, precision)."""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch

from fmashard.data.device import DeviceFeeder, resolve_device
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.sources import resolve_source
from fmashard.data.windows import WindowSpec
from fmashard.models import build_model


def _step_fn(model, device, amp: bool):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(windows, labels):
        optimizer.zero_grad(set_to_none=True)
        with ctx:
            loss = loss_fn(model(windows), labels)
        loss.backward()
        optimizer.step()
        return loss
    return step


def _timed_steps(batches, step, steps: int, device) -> float:
    """Windows/s over `steps` steps after one warm-up step."""
    it = iter(batches)
    windows, labels = next(it)
    step(windows, labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, count = time.perf_counter(), 0
    for _ in range(steps):
        windows, labels = next(it)
        step(windows, labels).item()
        count += windows.shape[0]
    return count / (time.perf_counter() - start)


def model_throughput(config) -> dict:
    device = resolve_device(config.device)
    spec = resolve_source(config.shards, config.split)
    window = WindowSpec()
    model = build_model(config.with_model, len(spec.vocabulary or ()) or 8, window.window).to(device)
    step = _step_fn(model, device, config.amp)
    loader = ShardLoader(spec, LoaderConfig(batch_size=config.batch_size, seed=config.seed))

    def real():
        while True:
            for batch in DeviceFeeder(loader, device, window, seed=config.seed):
                yield batch.windows, batch.labels

    n = config.batch_size * window.count
    synthetic_batch = (torch.randn(n, 1, window.window, device=device) * 0.1,
                       torch.randint(0, model.fc.out_features, (n,), device=device))

    def synthetic():
        while True:
            yield synthetic_batch
    real_rate = _timed_steps(real(), step, config.model_steps, device)
    synthetic_rate = _timed_steps(synthetic(), step, config.model_steps, device)
    return {"model": config.with_model, "precision": "bf16" if config.amp else "fp32", "device": device.type,
            "steps": config.model_steps, "real_windows_per_s": real_rate,
            "synthetic_windows_per_s": synthetic_rate, "ratio": real_rate / synthetic_rate}
