"""Read FMA's metadata (`fma_metadata/tracks.csv`, `genres.csv`) and select the tracks to shard.

`tracks.csv` has three header lines (group, column, then a `track_id` line) and 52 columns in four
groups; it is read the way FMA's own `utils.load` reads it.  A selection keeps the tracks of a subset
(`subset <= "small"`, as in FMA) and of the wanted splits that have a `genre_top`; the label of a
track is the index of its genre in the sorted vocabulary.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from fmashard.errors import UserError
from shard_tools.selection import BUILD_SUBSETS, SPLITS, SUBSETS, Selection, TrackRef  # noqa: F401 - re-exported

SUBSET_DTYPE = pd.CategoricalDtype(categories=list(SUBSETS), ordered=True)

SUBSET_COLUMN = ("set", "subset")
SPLIT_COLUMN = ("set", "split")
GENRE_COLUMN = ("track", "genre_top")
REQUIRED_COLUMNS = (SUBSET_COLUMN, SPLIT_COLUMN, GENRE_COLUMN)
LIST_COLUMNS = (("track", "genres"), ("track", "genres_all"), ("track", "tags"),
                ("album", "tags"), ("artist", "tags"))
DATE_COLUMNS = (("track", "date_created"), ("track", "date_recorded"), ("album", "date_created"),
                ("album", "date_released"), ("artist", "date_created"),
                ("artist", "active_year_begin"), ("artist", "active_year_end"))

# FMA's 52 columns in file order: groups sorted by name, columns sorted inside a group.
TRACKS_COLUMNS: tuple[tuple[str, str], ...] = tuple(
    (group, column)
    for group, columns in (
        ("album", "comments date_created date_released engineer favorites id information listens "
                  "producer tags title tracks type"),
        ("artist", "active_year_begin active_year_end associated_labels bio comments date_created "
                   "favorites id latitude location longitude members name related_projects tags "
                   "website wikipedia_page"),
        ("set", "split subset"),
        ("track", "bit_rate comments composer date_created date_recorded duration favorites "
                  "genre_top genres genres_all information interest language_code license listens "
                  "lyricist number publisher tags title"),
    )
    for column in columns.split()
)
GENRES_COLUMNS = ("genre_id", "#tracks", "parent", "title", "top_level")

TRACKS_LAYOUT = "expected FMA tracks.csv with 2 header rows (group, column) and a track_id row"


def load_tracks(path: str | Path) -> pd.DataFrame:
    """Read FMA's tracks.csv: list columns parsed, dates parsed, ('set','subset') ordered."""
    path = Path(path)
    tracks = _read_tracks_csv(path)
    _check_tracks_layout(tracks, path)
    tracks.index = tracks.index.astype("int64")
    for column in LIST_COLUMNS:
        if column in tracks.columns:
            tracks[column] = _parse_list_column(tracks[column], path)
    for column in DATE_COLUMNS:
        if column in tracks.columns:
            # Unused by the pipeline: a malformed date becomes NaT instead of failing a build.
            tracks[column] = pd.to_datetime(tracks[column], format="ISO8601", errors="coerce")
    tracks[SUBSET_COLUMN] = _subset_column(tracks[SUBSET_COLUMN], path)
    tracks[GENRE_COLUMN] = tracks[GENRE_COLUMN].astype("category")
    return tracks


def load_genres(path: str | Path) -> pd.DataFrame:
    """Read FMA's genres.csv, indexed by genre_id (columns #tracks, parent, title, top_level)."""
    path = Path(path)
    _check_file(path)
    try:
        genres = pd.read_csv(path)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:  # pandas parse errors are ValueErrors
        raise UserError(f"{path}: cannot read genres CSV ({_first_line(exc)})") from None
    if list(genres.columns) != list(GENRES_COLUMNS):
        raise UserError(f"{path}: expected FMA genres.csv with columns {','.join(GENRES_COLUMNS)}")
    return genres.set_index("genre_id")


def audio_path(fma_dir: str | Path, subset: str, track_id: int) -> Path:
    """Where FMA keeps a track: fma_dir/fma_{subset}/000/000002.mp3 (fma_full/ for `full`)."""
    tid = f"{track_id:06d}"
    return Path(fma_dir) / f"fma_{subset}" / tid[:3] / f"{tid}.mp3"


def label_vocabulary(tracks: pd.DataFrame) -> list[str]:
    """The sorted genre_top names present in `tracks`."""
    return sorted(str(name) for name in tracks[GENRE_COLUMN].dropna().unique())


def select_tracks(tracks: pd.DataFrame, subset: str, splits: tuple[str, ...] = SPLITS) -> Selection:
    """Keep the tracks of `subset` (and smaller subsets) in `splits` that have a genre_top (UserError when
    there is none at all; a split may be empty).

    The vocabulary is taken from every split of the subset, so a track's label does not depend on
    which splits are selected.
    """
    check_subset(subset)
    splits = check_splits(splits)
    in_subset = tracks[_subset_column(tracks[SUBSET_COLUMN], None) <= ("large" if subset == "full" else subset)]
    wanted = in_subset[in_subset[SPLIT_COLUMN].isin(splits)]
    has_genre = wanted[GENRE_COLUMN].notna()
    vocabulary = label_vocabulary(in_subset)
    labels = {genre: label for label, genre in enumerate(vocabulary)}
    chosen = wanted[has_genre].sort_index()
    refs: dict[str, list[TrackRef]] = {split: [] for split in splits}
    for track_id, genre, split in zip(chosen.index, chosen[GENRE_COLUMN], chosen[SPLIT_COLUMN]):
        refs[split].append(TrackRef(int(track_id), str(genre), labels[str(genre)], str(split)))
    if not any(refs.values()):   # an empty split is the build's warning (shard_tools.splits), as for any input
        raise UserError(f"no tracks with a genre_top in subset {subset!r}, split{'s' if len(splits) > 1 else ''} "
                        f"{', '.join(splits)}")
    return Selection(subset, vocabulary, int((~has_genre).sum()), refs)


def with_paths(selection: Selection, fma_dir: str | Path) -> Selection:
    """The selection with each track's audio path filled in (FMA's own layout)."""
    from dataclasses import replace

    tracks = {split: [replace(t, path=str(audio_path(fma_dir, selection.subset, t.track_id))) for t in refs]
              for split, refs in selection.tracks.items()}
    return replace(selection, tracks=tracks)


def load_selection(fma_dir: str | Path, subset: str, splits: tuple[str, ...] = SPLITS) -> Selection:
    """Read fma_dir/fma_metadata/tracks.csv and select the tracks to shard."""
    path = Path(fma_dir) / "fma_metadata" / "tracks.csv"
    if Path(fma_dir).exists() and not Path(fma_dir).is_dir():
        raise UserError(f"{fma_dir}: not a folder (expected the FMA folder holding fma_metadata/)")
    try:
        check_subset(subset)
        splits = check_splits(splits)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    tracks = load_tracks(path)
    try:
        return select_tracks(tracks, subset, splits)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def check_subset(subset: str) -> None:
    """UserError unless `subset` is one of FMA's subsets (or `full`)."""
    if subset not in BUILD_SUBSETS:
        raise UserError(f"unknown subset {subset!r} (valid: {', '.join(BUILD_SUBSETS)})")


def check_splits(splits: tuple[str, ...] | list[str] | str) -> tuple[str, ...]:
    """The splits as a tuple; UserError on an unknown or missing split."""
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise UserError(f"unknown split {unknown[0]!r} (valid: {', '.join(SPLITS)})")
    if not splits:
        raise UserError(f"no split given (valid: {', '.join(SPLITS)})")
    return splits


def _check_file(path: Path) -> None:
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise UserError(f"{path}: {what}")


def _read_tracks_csv(path: Path) -> pd.DataFrame:
    _check_file(path)
    try:
        return pd.read_csv(path, header=[0, 1], index_col=0, low_memory=False)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, IndexError, UnicodeDecodeError):  # ParserError, EmptyDataError are ValueErrors
        raise UserError(f"{path}: {TRACKS_LAYOUT}") from None


def _check_tracks_layout(tracks: pd.DataFrame, path: Path) -> None:
    if tracks.columns.nlevels != 2 or tracks.index.name != "track_id":
        raise UserError(f"{path}: {TRACKS_LAYOUT}")
    missing = [column for column in REQUIRED_COLUMNS if column not in tracks.columns]
    if missing:
        raise UserError(f"{path}: {TRACKS_LAYOUT} (missing column {missing[0]})")
    if not pd.api.types.is_integer_dtype(tracks.index) or tracks.index.has_duplicates:
        raise UserError(f"{path}: {TRACKS_LAYOUT} (track_id values must be unique integers)")


def _parse_list_column(values: pd.Series, path: Path) -> pd.Series:
    def parse(text: object, track_id: int) -> list:
        if not isinstance(text, str):
            return []  # an empty cell
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            parsed = None
        if not isinstance(parsed, list):
            raise UserError(f"{path}: track_id {track_id} column {values.name}: "
                            f"expected a Python list literal such as [21], got {text[:40]!r}")
        return parsed

    return pd.Series([parse(text, tid) for tid, text in values.items()], index=values.index,
                     dtype=object)


def _subset_column(values: pd.Series, path: Path | None) -> pd.Series:
    if values.dtype == SUBSET_DTYPE:
        return values
    unknown = sorted(set(values.dropna().astype(str)) - set(SUBSETS))
    if unknown:
        where = f"{path}: " if path else ""
        raise UserError(f"{where}unknown subset value {unknown[0]!r} in column {SUBSET_COLUMN} "
                        f"(valid: {', '.join(SUBSETS)})")
    return values.astype(SUBSET_DTYPE)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
