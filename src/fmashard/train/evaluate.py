"""Evaluation: loss, window accuracy, and track accuracy over each track's windows.

Every track's W windows travel together in one batch (`make_windows` keeps them consecutive), so track
predictions need no bookkeeping across batches:
  - vote:        the majority of the windows' argmax (ties -> lowest class index, as the notebook's
                 `np.argmax(np.bincount(...))`);
  - mean logits: argmax of the windows' mean logits.
Totals stay on the device during the loop; they are summed over ranks once at the end (each rank
evaluates distinct tracks, so the sums are exact).  `evaluate_checkpoint` adds a confusion matrix of
the vote predictions as JSON and PNG.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from fmashard.train.checkpoint import load_checkpoint, write_json
from fmashard.data.device import DeviceFeeder
from fmashard.train.distributed import all_reduce_sum, init_distributed
from fmashard.errors import UserError, log
from fmashard.data.loader import LoaderConfig, ShardLoader
from fmashard.train.preflight import check_memory, writable_folder
from fmashard.data.sources import DatasetSpec, resolve_source
from fmashard.data.windows import WindowSpec

AMP_DTYPES = ("auto", "bf16", "fp16")


# ------------------------------------------------------------------------------------- precision
def amp_dtype_for(device: torch.device, amp_dtype: str) -> torch.dtype:
    """bf16 where the device has it (any CPU, CUDA from Ampere), else fp16; or what was asked for."""
    if amp_dtype == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--amp-dtype bf16: this GPU has no bfloat16; use --amp-dtype fp16")
        return torch.bfloat16
    if amp_dtype == "fp16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast_context(device: torch.device, amp: bool, amp_dtype: str = "auto"):
    """(ctx, dtype or None): the one autocast context of a run; `nullcontext()` without --amp."""
    if not amp:
        return nullcontext(), None
    dtype = amp_dtype_for(device, amp_dtype)
    try:
        ctx = torch.autocast(device.type, dtype=dtype)
    except RuntimeError as exc:  # an autocast that this torch/device combination lacks
        raise UserError(f"--amp: torch.autocast({device.type!r}, {dtype}) is not supported here ({exc})") from None
    if device.type == "cpu" and not _fast_cpu_amp(dtype):
        log.warning("--amp %s on this CPU: no native %s convolutions (needs AVX512-BF16/AMX), so convolutions "
                    "take PyTorch's slow reference path; fp32 (no --amp) is faster here",
                    "bf16" if dtype == torch.bfloat16 else "fp16", dtype)
    return ctx, dtype


def _fast_cpu_amp(dtype: torch.dtype) -> bool:
    try:
        if dtype == torch.bfloat16:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return True


# ------------------------------------------------------------------------------------- data
def labelled_split(source: str, split: str) -> DatasetSpec:
    """The DatasetSpec of `split`, which must come from a manifest with a genre vocabulary."""
    spec = resolve_source(source, split)
    if spec.manifest is None or not spec.vocabulary:
        raise UserError(f"{source}: training and evaluation need shards with a manifest.json holding the "
                        "genre vocabulary (build them with `fmashard build`)")
    return spec


def check_clip_length(spec: DatasetSpec, window: WindowSpec) -> None:
    need = window.window if window.random_crop else window.span()
    if spec.clip_samples < need:
        raise UserError(f"clips of {spec.clip_samples / spec.sample_rate:g} s ({spec.clip_samples} samples) are "
                        f"shorter than {window.count} windows of {window.window} samples with overlap "
                        f"{window.overlap:g} need ({need}); lower --windows or --window-seconds")


# ------------------------------------------------------------------------------------- metrics
def fmt(value: float | None, digits: int = 3) -> str:
    """A metric for people: "n/a" where there was nothing to measure (no tracks)."""
    return "n/a" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class EvalMetrics:
    loss: float | None              # None: no windows (an empty split), so nothing was measured
    window_acc: float | None
    track_acc_vote: float | None
    track_acc_mean: float | None
    windows: int
    tracks: int
    skipped: int = 0
    confusion: tuple[tuple[int, ...], ...] = ()   # [true][predicted] track counts, vote predictions

    def as_dict(self, prefix: str = "") -> dict:
        d = asdict(self)
        d.pop("confusion")
        return {f"{prefix}{k}": v for k, v in d.items()}


class MetricTotals:
    """Running sums on the device: loss*windows, correct windows, windows, tracks right by vote, tracks
    right by mean logits, tracks; and the vote confusion matrix."""

    def __init__(self, num_classes: int, device: torch.device):
        self.num_classes = num_classes
        self.sums = torch.zeros(6, dtype=torch.float64, device=device)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, labels: torch.Tensor, num_tracks: int, loss: torch.Tensor) -> None:
        if not num_tracks:   # a batch whose every track was skipped (on_error=skip)
            return
        logits = logits.detach().float()
        windows = logits.shape[0]
        per_track = windows // num_tracks
        track_labels = labels[::per_track]
        window_pred = logits.argmax(dim=1)
        votes = F.one_hot(window_pred, self.num_classes).view(num_tracks, per_track, -1).sum(dim=1)
        vote_pred = votes.argmax(dim=1)          # first maximum: ties go to the lowest class index
        mean_pred = logits.view(num_tracks, per_track, -1).mean(dim=1).argmax(dim=1)
        self.sums += torch.stack([loss.detach().double() * windows,
                                  (window_pred == labels).sum().double(),
                                  torch.tensor(windows, dtype=torch.float64, device=logits.device),
                                  (vote_pred == track_labels).sum().double(),
                                  (mean_pred == track_labels).sum().double(),
                                  torch.tensor(num_tracks, dtype=torch.float64, device=logits.device)])
        self.confusion.view(-1).index_add_(0, track_labels * self.num_classes + vote_pred,
                                           torch.ones_like(vote_pred))

    def state(self) -> dict:
        return {"sums": self.sums.cpu(), "confusion": self.confusion.cpu()}

    def load(self, state: dict) -> None:
        self.sums.copy_(state["sums"])
        self.confusion.copy_(state["confusion"])

    def reduced(self) -> "MetricTotals":
        """A copy summed over ranks (collective: every rank calls it)."""
        out = MetricTotals(self.num_classes, self.sums.device)
        out.sums.copy_(all_reduce_sum(self.sums.clone()))
        out.confusion.copy_(all_reduce_sum(self.confusion.clone()))
        return out

    def result(self, skipped: int = 0) -> EvalMetrics:
        loss, correct, windows, vote, mean, tracks = self.sums.tolist()

        def ratio(part: float, whole: float) -> float | None:
            return part / whole if whole else None
        return EvalMetrics(ratio(loss, windows), ratio(correct, windows), ratio(vote, tracks),
                           ratio(mean, tracks), int(windows), int(tracks), int(skipped),
                           tuple(tuple(row) for row in self.confusion.tolist()))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: ShardLoader, device: torch.device, window: WindowSpec,
             ctx=None, num_classes: int | None = None) -> EvalMetrics:
    """Metrics of `model` over every sample of `loader` (fixed windows), summed over ranks."""
    num_classes = num_classes or len(loader.spec.vocabulary)
    ctx = ctx or nullcontext()
    was_training = model.training
    model.eval()
    totals = MetricTotals(num_classes, device)
    for batch in DeviceFeeder(loader, device, replace(window, random_crop=False)):
        if not batch.num_tracks:  # all its tracks were skipped (on_error=skip)
            continue
        with ctx:
            logits = model(batch.windows)
            loss = F.cross_entropy(logits.float(), batch.labels)
        totals.add(logits, batch.labels, batch.num_tracks, loss)
    model.train(was_training)
    skipped = torch.tensor([loader.skipped_this_epoch], dtype=torch.float64, device=device)
    return totals.reduced().result(int(all_reduce_sum(skipped).item()))


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, loader: ShardLoader, device: torch.device, window: WindowSpec,
                          max_batches: int, ctx=None) -> int:
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
    for batch in DeviceFeeder(loader, device, replace(window, random_crop=False)):
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
        return (f"{self.split}: {m.tracks} tracks, {m.windows} windows | loss {fmt(m.loss, 4)} | window acc "
                f"{fmt(m.window_acc, 4)} | track acc vote {fmt(m.track_acc_vote, 4)} mean-logits "
                f"{fmt(m.track_acc_mean, 4)}")


def evaluate_checkpoint(config: EvaluateConfig) -> EvalReport:
    """Load a checkpoint (its model, window and vocabulary) and evaluate it on a split of `config.shards`;
    rank 0 writes eval_<split>.json, confusion_<split>.json and confusion_<split>.png into `config.out`."""
    from fmashard.models import build_model  # noqa: PLC0415 - keeps `import fmashard.train.evaluate` light

    if config.endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = config.endpoint_url
    state = load_checkpoint(config.checkpoint, required=("model_name", "model", "vocabulary", "window"))
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
            window = replace(WindowSpec(**state["window"]), random_crop=False)
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
        metrics = evaluate(model, loader, dist.device, window, ctx, len(vocabulary))
        files = {"metrics": str(out / f"eval_{config.split}.json"),
                 "confusion_json": str(out / f"confusion_{config.split}.json"),
                 "confusion_png": str(out / f"confusion_{config.split}.png")}
        if dist.is_main:
            write_json(files["metrics"], {"checkpoint": str(config.checkpoint), "shards": str(config.shards),
                                          "split": config.split, "model": state["model_name"],
                                          "epoch": state.get("epoch"), "step": state.get("step"),
                                          **metrics.as_dict()})
            write_confusion(out, config.split, vocabulary, metrics.confusion)
        return EvalReport(metrics, config.split, vocabulary, files)
    finally:
        dist.close()


def write_confusion(out: Path, split: str, vocabulary, confusion) -> None:
    """confusion_<split>.json ({vocabulary, matrix[true][predicted]}) and a labelled heat map PNG."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    matrix = [list(row) for row in confusion]
    write_json(out / f"confusion_{split}.json", {"split": split, "vocabulary": list(vocabulary),
                                                 "rows": "true genre", "columns": "predicted genre (vote)",
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
    ax.set_title(f"{split}: {sum(map(sum, matrix))} tracks")
    fig.tight_layout()
    fig.savefig(out / f"confusion_{split}.png")
    plt.close(fig)
