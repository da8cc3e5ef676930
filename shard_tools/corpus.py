"""Corpora besides FMA: a labelled table (CSV, TSV or JSON Lines) or a folder per class.

Table columns: `path` (relative to the table's folder, absolute, or a URL fmashard.storage reads),
`label`, and optional `split` (training/validation/test), `track_id` (a non-negative integer) and `group`
(an artist, an album: what must not cross splits).  Folder: `DIR/<class>/**/<file>.<audio ext>` (GTZAN,
ImageFolder); hidden files and folders and files that are not audio are ignored.

Track ids, when not given, are the positions of the paths in sorted order (the same inputs always give
the same ids).  Labels are indices into the sorted class names.  Splits, when not given, come from the
`group` (else the path) by `shard_tools.splits.assign_splits`: a group never crosses splits, every split
with a share gets a group when there are enough, and the assignment depends on the groups and the ratios
alone (not the seed, not the order of the rows).
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

from fmashard.errors import UserError
from shard_tools.selection import SPLITS, Selection, TrackRef
from shard_tools.splits import assign_splits, check_training, hash_split  # noqa: F401 - hash_split re-exported

AUDIO_EXTS = frozenset(".mp3 .ogg .oga .opus .flac .wav .wave .au .snd .aif .aiff .aifc .w64 .caf".split())
TABLE_KINDS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".jsonl": "jsonl", ".ndjson": "jsonl"}
COLUMNS = ("path", "label", "split", "track_id", "group")
REQUIRED = ("path", "label")
MAX_LABEL = 100   # characters: a label lives in every sample's .json (< 512 bytes)


@dataclass(frozen=True)
class Row:
    line: int             # where the row is in the table (1-based; the header is line 1 of a CSV)
    path: str             # as written (relative to the table's folder) or a URL / absolute path
    label: str
    split: str | None
    track_id: int | None
    group: str | None


def parse_ratios(text: str | tuple) -> tuple[float, float, float]:
    """'80,10,10' -> (0.8, 0.1, 0.1); UserError unless three non-negative numbers with training > 0."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 or v != v for v in values) or not values[0] > 0:
        raise UserError(f"split_ratios: expected three non-negative numbers training,validation,test with "
                        f"training > 0, such as 80,10,10; got {text!r}")
    total = sum(values)
    return tuple(v / total for v in values)


# ---------------------------------------------------------------------------- reading a table
def read_table(path: Path) -> list[Row]:
    kind = TABLE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{path}: unknown table type {path.suffix!r} (use .csv, .tsv or .jsonl)")
    if not path.is_file():
        raise UserError(f"{path}: {'is a folder, not a table' if path.is_dir() else 'file not found'}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            records = _jsonl_records(path, f) if kind == "jsonl" else _csv_records(path, f, kind)
            rows = [_row(path, line, record) for line, record in records]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not rows:
        raise UserError(f"{path}: no rows (expected a header line and one row per track)")
    return rows


def _csv_records(path: Path, f, delimiter: str):
    reader = csv.DictReader(f, delimiter=delimiter)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise UserError(f"{path}: line 1: missing column {missing[0]!r} (the header has "
                        f"{', '.join(header) or 'nothing'}; needed: {', '.join(REQUIRED)}, optional: split, "
                        "track_id, group)")
    reader.fieldnames = header
    try:
        for record in reader:
            if None in record:
                raise UserError(f"{path}: line {reader.line_num}: more fields than the header has")
            if any(v is not None and v.strip() for v in record.values()):   # blank lines are skipped
                yield reader.line_num, record
    except csv.Error as exc:
        raise UserError(f"{path}: line {reader.line_num}: {exc}") from None


def _jsonl_records(path: Path, f):
    for line_no, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: line {line_no}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: line {line_no}: expected a JSON object per line")
        missing = [c for c in REQUIRED if c not in record]
        if missing:
            raise UserError(f"{path}: line {line_no}: missing column {missing[0]!r}")
        yield line_no, {k: None if v is None else str(v) for k, v in record.items()}


def _row(path: Path, line: int, record: dict) -> Row:
    def cell(name: str) -> str | None:
        value = record.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    where = f"{path}: line {line}"
    audio, label = cell("path"), cell("label")
    if audio is None or label is None:
        raise UserError(f"{where}: empty {'path' if audio is None else 'label'}")
    if len(label) > MAX_LABEL:
        raise UserError(f"{where}: label longer than {MAX_LABEL} characters ({label[:40]!r}...)")
    split = cell("split") if "split" in record else None
    if "split" in record and split not in SPLITS:
        raise UserError(f"{where}: unknown split {(split or '')!r} (valid: {', '.join(SPLITS)})")
    track_id = cell("track_id")
    if track_id is not None:
        if not track_id.isdigit():
            raise UserError(f"{where}: track_id {track_id!r} is not a non-negative integer")
        track_id = int(track_id)
    elif "track_id" in record:
        raise UserError(f"{where}: empty track_id (give every row one, or drop the column)")
    return Row(line, audio, label, split, track_id, cell("group"))


# ---------------------------------------------------------------------------- a folder per class
def read_folder(root: Path) -> list[Row]:
    if not root.is_dir():
        raise UserError(f"{root}: {'not a folder' if root.exists() else 'folder not found'} (expected a folder "
                        "per class: DIR/blues/*.au, DIR/rock/*.wav, ...)")
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTS:
                    rel = (Path(dirpath) / name).relative_to(root).as_posix()
                    rows.append(Row(0, rel, class_dir.name, None, None, None))
    if not rows:
        raise UserError(f"{root}: no audio files in class folders (expected DIR/<class>/<file>.wav|.au|.mp3|...)")
    return rows


# ---------------------------------------------------------------------------- rows -> selection
def load_corpus(corpus: str | Path, ratios: tuple[float, float, float]) -> Selection:
    """A table or a folder per class -> the Selection to build (paths resolved for decoding)."""
    root = Path(corpus)
    rows = read_folder(root) if root.is_dir() else read_table(root)
    base = root if root.is_dir() else root.parent
    return selection_of(rows, root, base, ratios)


def selection_of(rows: list[Row], source: Path, base: Path, ratios) -> Selection:
    vocabulary = sorted({row.label for row in rows})
    if len(vocabulary) < 2:
        raise UserError(f"{source}: every track has the label {vocabulary[0]!r}: a classifier needs at least "
                        "two classes")
    _check_unique(source, rows, "path", lambda r: r.path)
    ids = _track_ids(source, rows)
    labels = {name: i for i, name in enumerate(vocabulary)}
    assigned, rule = assign_splits((_group_key(row) for row in rows if not row.split), ratios)
    tracks: dict[str, list[TrackRef]] = {split: [] for split in SPLITS}
    groups: dict[str, set] = {split: set() for split in SPLITS}
    for row, track_id in zip(rows, ids):
        split = row.split or assigned[_group_key(row)]
        groups[split].add(_group_key(row))
        tracks[split].append(TrackRef(track_id, row.label, labels[row.label], split, _resolve(base, row.path),
                                      row.path))
    for refs in tracks.values():
        refs.sort(key=lambda t: t.track_id)
    key = "group" if any(r.group for r in rows) else "path"
    split_by = "table" if rows[0].split else f"{rule}(hash({key}))" if rule == "rank" else f"hash({key})"
    selection = Selection("folder" if source.is_dir() else "table", vocabulary, 0, tracks, split_by=split_by,
                          groups={split: len(keys) for split, keys in groups.items()})
    check_training(selection, str(source))
    return selection


def _group_key(row: Row) -> str:
    """What must not cross splits: the row's group, else its path."""
    return row.group or row.path


def _track_ids(source: Path, rows: list[Row]) -> list[int]:
    given = [row.track_id for row in rows]
    if all(t is None for t in given):
        order = {path: i for i, path in enumerate(sorted(row.path for row in rows))}
        return [order[row.path] for row in rows]
    _check_unique(source, rows, "track_id", lambda r: r.track_id)
    return given


def _check_unique(source: Path, rows: list[Row], what: str, key) -> None:
    seen: dict = {}
    for row in rows:
        first = seen.setdefault(key(row), row)
        if first is not row:
            at = f"line {row.line}" if row.line else row.path
            was = f"line {first.line}" if first.line else first.path
            raise UserError(f"{source}: {at}: duplicate {what} {key(row)!r} (first at {was})")


def _resolve(base: Path, path: str) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return str(base / path)
