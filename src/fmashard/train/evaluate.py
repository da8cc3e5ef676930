"""Evaluation: the metrics (`fmashard.train.metrics`) of a model over a split, at fixed windows (no
transforms), summed over ranks, each track counted once over all its clips (`fmashard.train.tracks`);
`evaluate_checkpoint` evaluates a saved run and adds a confusion matrix of the tracks' vote predictions as
JSON and PNG.  `recalibrate_batchnorm` is the "precise BN" pass before it.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fmashard import storage
from fmashard.data.device import DeviceFeeder
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.data.windows import WindowSpec
from fmashard.errors import UserError
from fmashard.train.checkpoint import load_checkpoint, window_of
from fmashard.train.distributed import all_reduce_sum, init_distributed
from fmashard.train.guard import non_finite_tensors
from fmashard.train.metrics import EvalMetrics, MetricTotals, fmt
from fmashard.train.precision import autocast_context
from fmashard.train.preflight import check_clip_length, check_memory, labelled_split, writable_folder
from fmashard.train.run_dir import write_json


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: ShardLoader, device: torch.device, window: WindowSpec,
             ctx=None, num_classes: int | None = None, features=None) -> EvalMetrics:
    """Metrics of `model` over every sample of `loader` (fixed windows, then `features`: what the model
    takes, `fmashard.data.features`), summed over ranks."""
    num_classes = num_classes or len(loader.spec.vocabulary)
    ctx = ctx or nullcontext()
    was_training = model.training
    model.eval()
    totals = MetricTotals(num_classes, device, by_track=True)
    for batch in DeviceFeeder(loader, device, window, features=features):
        if not batch.num_tracks:  # all its tracks were skipped (on_error=skip)
            continue
        with ctx:
            logits = model(batch.windows)
            loss = F.cross_entropy(logits.float(), batch.labels)
        totals.add(logits, batch.labels, batch.num_tracks, loss, batch.track_ids)
    model.train(was_training)
    skipped = torch.tensor([loader.skipped_this_epoch], dtype=torch.float64, device=device)
    return totals.reduced().result(int(all_reduce_sum(skipped).item()))


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, loader: ShardLoader, device: torch.device, window: WindowSpec,
                          max_batches: int, ctx=None, features=None) -> int:
    """"Precise BN": re-estimate every BatchNorm's running statistics with the current weights, as the
    plain average over `max_batches` batches of `loader` (torch.optim.swa_utils.update_bn does the same).
    Early in training the running averages trail weights that change fast, so eval-mode predictions
    collapse to one class although batch-statistics predictions are right; this removes the lag.  Returns
    the number of batches used.  Does not touch the weights, the optimizer or any RNG."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or max_batches < 1:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None          # cumulative average
    was_training, used = model.training, 0
    model.train()
    ctx = ctx or nullcontext()
    for batch in DeviceFeeder(loader, device, window, features=features):
        if batch.windows.shape[0] < 2:  # BatchNorm has no statistics of a batch of one
            continue
        with ctx:
            model(batch.windows)
        used += 1
        if used >= max_batches:
            break
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)
    return used


# ------------------------------------------------------------------------------------- from a checkpoint
@dataclass(frozen=True)
class EvaluateConfig:
    checkpoint: str
    shards: str
    split: str = "test"
    out: str | None = None          # default: the checkpoint's folder
    batch_size: int = 8             # tracks per forward pass
    device: str = "auto"
    workers: int = 0
    amp: bool | None = None         # None: as the checkpoint was trained
    on_error: str = "raise"
    check_crc: bool = False         # check each sample's audio against the build's crc32 (LoaderConfig)
    endpoint_url: str | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise UserError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise UserError(f"workers: must be >= 0, got {self.workers}")
        if self.on_error not in ("raise", "skip"):
            raise UserError(f"on_error: must be raise or skip, got {self.on_error!r}")


@dataclass(frozen=True)
class EvalReport:
    metrics: EvalMetrics
    split: str
    vocabulary: tuple[str, ...]
    files: dict[str, str]

    def summary(self) -> str:
        m = self.metrics
        clips = f"{m.clips} clips, " if m.clips != m.tracks else ""
        clip_acc = f" | clip acc {fmt(m.clip_acc_vote, 4)}" if m.clips != m.tracks else ""
        return (f"{self.split}: {m.tracks} tracks, {clips}{m.windows} windows | loss {fmt(m.loss, 4)} | window acc "
                f"{fmt(m.window_acc, 4)}{clip_acc} | track acc vote {fmt(m.track_acc_vote, 4)} mean-logits "
                f"{fmt(m.track_acc_mean, 4)}")


def evaluate_checkpoint(config: EvaluateConfig) -> EvalReport:
    """Load a checkpoint (its model, window and vocabulary) and evaluate it on a split of `config.shards`;
    rank 0 writes eval_<split>.json, confusion_<split>.json and confusion_<split>.png into `config.out`."""
    from fmashard.data.features import make_features  # noqa: PLC0415
    from fmashard.models import build_model, model_features  # noqa: PLC0415 - keeps the import light

    storage.set_endpoint_url(config.endpoint_url)
    state = load_checkpoint(config.checkpoint, required=("model_name", "model", "vocabulary", "window"))
    bad = non_finite_tensors(state["model"]) if isinstance(state["model"], dict) else []
    if bad:
        raise UserError(f"{config.checkpoint}: {len(bad)} of its weight tensors are not finite (e.g. {bad[0]!r}): "
                        "the run diverged; evaluate an earlier checkpoint (best.pt) or retrain with a lower --lr")
    out = Path(config.out) if config.out else Path(config.checkpoint).resolve().parent
    writable_folder(out, "--out" if config.out else "--out (default: the checkpoint's folder)")
    dist = init_distributed(config.device)
    try:
        spec = labelled_split(config.shards, config.split)
        vocabulary = tuple(state["vocabulary"])
        if tuple(spec.vocabulary) != vocabulary:
            raise UserError(f"{config.checkpoint} was trained on the genres {list(vocabulary)}, but {config.shards} "
                            f"has {list(spec.vocabulary)}")
        try:
            window = window_of(state["window"])
        except TypeError as exc:
            raise UserError(f"{config.checkpoint}: not an fmashard checkpoint (its window: {exc})") from None
        check_clip_length(spec, window)
        model = build_model(state["model_name"], len(vocabulary), window.window)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise UserError(f"{config.checkpoint}: weights do not fit model {state['model_name']!r} "
                            f"({str(exc).splitlines()[0]})") from None
        model.to(dist.device)
        trained = state.get("config") or {}
        amp = trained.get("amp", False) if config.amp is None else config.amp
        ctx, _ = autocast_context(dist.device, amp, trained.get("amp_dtype", "auto"))
        loader = ShardLoader(spec, LoaderConfig(batch_size=config.batch_size, shuffle=False, equal_ranks=False,
                                                num_workers=config.workers, on_error=config.on_error,
                                                check_crc=config.check_crc))
        loader.label = f"{config.split} split"
        check_memory(spec, loader.config, dist.world_size)
        features = make_features(model_features(state["model_name"]), spec.sample_rate)
        metrics = evaluate(model, loader, dist.device, window, ctx, len(vocabulary), features)
        files = {"metrics": str(out / f"eval_{config.split}.json"),
                 "confusion_json": str(out / f"confusion_{config.split}.json"),
                 "confusion_png": str(out / f"confusion_{config.split}.png")}
        if dist.is_main:
            write_json(files["metrics"], {"checkpoint": str(config.checkpoint), "shards": str(config.shards),
                                          "split": config.split, "model": state["model_name"],
                                          "epoch": state.get("epoch"), "step": state.get("step"),
                                          **metrics.as_dict()})
            write_confusion(out, config.split, vocabulary, metrics.confusion, metrics.clips)
        return EvalReport(metrics, config.split, vocabulary, files)
    finally:
        dist.close()


def write_confusion(out: Path, split: str, vocabulary, confusion, clips: int | None = None) -> None:
    """confusion_<split>.json ({vocabulary, matrix[true][predicted] track counts, tracks, clips}) and a
    labelled heat map PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    matrix = [list(row) for row in confusion]
    write_json(out / f"confusion_{split}.json", {"split": split, "vocabulary": list(vocabulary),
                                                 "rows": "true genre", "columns": "predicted genre (vote)",
                                                 "tracks": sum(map(sum, matrix)), "clips": clips,
                                                 "matrix": matrix})
    n = len(vocabulary)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.6 * n), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), vocabulary, rotation=45, ha="right")
    ax.set_yticks(range(n), vocabulary)
    ax.set_xlabel("predicted (majority vote over windows)")
    ax.set_ylabel("true")
    top = max((v for row in matrix for v in row), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    of_clips = f" ({clips} clips)" if clips is not None and clips != sum(map(sum, matrix)) else ""
    ax.set_title(f"{split}: {sum(map(sum, matrix))} tracks{of_clips}")
    fig.tight_layout()
    fig.savefig(out / f"confusion_{split}.png")
    plt.close(fig)
