"""shard_tools.fma_metadata on FMA's tracks.csv layout (the demo corpus) and its errors via the CLI."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from fmashard.errors import UserError
from shard_tools.demo_corpus import GENRE_IDS, GENRE_NAMES
from shard_tools.fma_metadata import (
    LIST_COLUMNS,
    SPLITS,
    TRACKS_COLUMNS,
    audio_path,
    label_vocabulary,
    load_genres,
    load_selection,
    load_tracks,
    select_tracks,
)


@pytest.fixture(scope="module")
def tracks(demo_corpus) -> pd.DataFrame:
    return load_tracks(demo_corpus / "fma_metadata" / "tracks.csv")


def test_tracks_csv_has_fmas_three_header_lines(demo_corpus):
    head = (demo_corpus / "fma_metadata" / "tracks.csv").read_text().splitlines()[:3]
    assert head[0].split(",") == [""] + [group for group, _ in TRACKS_COLUMNS]
    assert head[1].split(",") == [""] + [column for _, column in TRACKS_COLUMNS]
    assert head[2] == "track_id" + "," * 52


def test_fma_column_order_is_groups_then_columns_sorted():
    assert len(TRACKS_COLUMNS) == 52
    assert list(TRACKS_COLUMNS) == sorted(TRACKS_COLUMNS)
    sizes = pd.Series([group for group, _ in TRACKS_COLUMNS]).value_counts().to_dict()
    assert sizes == {"album": 13, "artist": 17, "set": 2, "track": 20}


def test_load_tracks_round_trip(tracks, demo_summary):
    assert list(tracks.columns) == list(TRACKS_COLUMNS)
    assert tracks.index.name == "track_id" and tracks.index.dtype == "int64"
    assert tracks.index.is_monotonic_increasing and tracks.index[0] == 2
    assert {demo_summary.short_track_id, demo_summary.broken_track_id} <= set(tracks.index)
    for column in LIST_COLUMNS:
        assert tracks[column].map(lambda value: isinstance(value, list)).all(), column
    assert pd.api.types.is_datetime64_any_dtype(tracks["track", "date_created"])


def test_genres_lists_hold_the_top_genre_id(tracks):
    with_genre = tracks[tracks["track", "genre_top"].notna()]
    for genre, genres, genres_all in zip(with_genre["track", "genre_top"], with_genre["track", "genres"],
                                         with_genre["track", "genres_all"]):
        assert GENRE_IDS[genre] in genres and set(genres) <= set(genres_all)
    no_genre = tracks[tracks["track", "genre_top"].isna()]
    assert len(no_genre) == len(no_genre["track", "genres"]) == 3
    assert all(len(genres) == 2 for genres in no_genre["track", "genres"])  # two top genres: no genre_top


def test_subset_is_ordered_and_small_excludes_medium(tracks, demo_summary):
    assert tracks["set", "subset"].cat.ordered
    assert list(tracks["set", "subset"].cat.categories) == ["small", "medium", "large"]
    small = tracks[tracks["set", "subset"] <= "small"]
    medium = set(demo_summary.medium_track_ids)
    assert len(medium) == 3 and not medium & set(small.index)
    assert medium <= set(tracks[tracks["set", "subset"] <= "medium"].index)


def test_select_tracks_by_subset(tracks, demo_summary):
    small = select_tracks(tracks, "small")
    medium = select_tracks(tracks, "medium")
    small_ids = {ref.track_id for refs in small.tracks.values() for ref in refs}
    medium_ids = {ref.track_id for refs in medium.tracks.values() for ref in refs}
    assert medium_ids - small_ids == set(demo_summary.medium_track_ids)
    assert small.num_tracks == 40 and medium.num_tracks == 43


def test_select_tracks_by_split(tracks):
    selection = select_tracks(tracks, "small", ("validation",))
    assert list(selection.tracks) == ["validation"]
    refs = selection.tracks["validation"]
    assert len(refs) == 4 and {ref.split for ref in refs} == {"validation"}
    assert {ref.genre for ref in refs} == set(GENRE_NAMES[:4])


def test_vocabulary_sorted_and_labels_index_it(tracks):
    selection = select_tracks(tracks, "small")
    assert selection.vocabulary == sorted(selection.vocabulary) == list(GENRE_NAMES[:4])
    assert label_vocabulary(tracks) == selection.vocabulary
    for refs in selection.tracks.values():
        assert [ref.track_id for ref in refs] == sorted(ref.track_id for ref in refs)
        assert all(selection.vocabulary[ref.label] == ref.genre for ref in refs)


def test_labels_do_not_depend_on_the_splits_selected(tracks):
    test_only = select_tracks(tracks, "small", ("test",))
    assert test_only.vocabulary == select_tracks(tracks, "small").vocabulary


def test_tracks_without_genre_are_excluded_and_counted(tracks, demo_summary):
    selection = select_tracks(tracks, "small")
    assert selection.excluded_no_genre == 3
    selected = {ref.track_id for refs in selection.tracks.values() for ref in refs}
    assert not selected & set(demo_summary.no_genre_track_ids)
    assert select_tracks(tracks, "small", ("training",)).excluded_no_genre == 1  # one per split


def test_load_selection_matches_the_corpus(demo_corpus, demo_summary):
    selection = load_selection(demo_corpus, "small", SPLITS)
    counts = {genre: {split: 0 for split in SPLITS} for genre in selection.vocabulary}
    for split, refs in selection.tracks.items():
        for ref in refs:
            counts[ref.genre][split] += 1
            assert audio_path(demo_corpus, "small", ref.track_id).is_file()
    assert counts == demo_summary.counts


def test_audio_path_is_fmas_layout(tmp_path):
    assert audio_path(tmp_path, "small", 2) == tmp_path / "fma_small" / "000" / "000002.mp3"
    assert audio_path(str(tmp_path), "medium", 98565) == tmp_path / "fma_medium" / "098" / "098565.mp3"


def test_load_genres(demo_corpus, tracks):
    genres = load_genres(demo_corpus / "fma_metadata" / "genres.csv")
    assert genres.index.name == "genre_id"
    assert list(genres.columns) == ["#tracks", "parent", "title", "top_level"]
    assert genres.loc[12, "title"] == "Rock" and genres.loc[25, "top_level"] == 12
    rock_family = sum(12 in ids for ids in tracks["track", "genres_all"])
    assert genres.loc[12, "#tracks"] == rock_family


def test_load_genres_rejects_another_csv(demo_corpus):
    path = demo_corpus / "fma_metadata" / "tracks.csv"
    with pytest.raises(UserError) as caught:
        load_genres(path)
    assert str(caught.value).startswith(f"{path}: expected FMA genres.csv with columns genre_id,#tracks")


def test_select_tracks_accepts_plain_subset_strings(tracks):
    plain = tracks.astype({("set", "subset"): str})
    assert select_tracks(plain, "small").num_tracks == 40


# ----------------------------------------------------------------------------- errors, via the CLI
def write_tracks_csv(fma_dir: Path, rows: list[list[str]]) -> Path:
    path = fma_dir / "fma_metadata" / "tracks.csv"
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return path


def demo_rows(demo_corpus: Path) -> list[list[str]]:
    with open(demo_corpus / "fma_metadata" / "tracks.csv", newline="") as f:
        return list(csv.reader(f))


def drop_column(rows: list[list[str]], group: str, column: str) -> list[list[str]]:
    at = list(zip(rows[0], rows[1])).index((group, column))
    return [row[:at] + row[at + 1:] for row in rows]


def only_without_genre(rows: list[list[str]]) -> list[list[str]]:
    at = list(zip(rows[0], rows[1])).index(("track", "genre_top"))
    return rows[:3] + [row for row in rows[3:] if not row[at]]


def bad_literal(rows: list[list[str]]) -> list[list[str]]:
    at = list(zip(rows[0], rows[1])).index(("track", "genres"))
    rows[3][at] = "[15,"
    return rows


LAYOUT = "expected FMA tracks.csv with 2 header rows (group, column) and a track_id row"
BAD_FILES = {
    "one header row": (lambda rows: [["track_id", "genre_top", "split"], ["2", "Rock", "training"]], LAYOUT),
    "no track_id row": (lambda rows: rows[:2] + rows[3:], LAYOUT),
    "no subset column": (lambda rows: drop_column(rows, "set", "subset"), "missing column ('set', 'subset')"),
    "no genre_top column": (lambda rows: drop_column(rows, "track", "genre_top"), "('track', 'genre_top')"),
    "empty file": (lambda rows: [], LAYOUT),
    "bad list literal": (bad_literal, "expected a Python list literal"),
    "empty selection": (only_without_genre, "no tracks with a genre_top in subset 'small'"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_tracks_csv_is_one_line_error(case, demo_corpus, tmp_path, cli_error):
    make_rows, expected = BAD_FILES[case]
    path = write_tracks_csv(tmp_path, make_rows(demo_rows(demo_corpus)))
    message = cli_error("fma-info", tmp_path)
    assert str(path) in message and expected in message


def test_binary_tracks_csv_is_one_line_error(tmp_path, cli_error):
    path = tmp_path / "fma_metadata" / "tracks.csv"
    path.parent.mkdir()
    path.write_bytes(b"\xff\xfe\x00\x01garbage\x00\x9c")
    message = cli_error("fma-info", tmp_path)
    assert str(path) in message and LAYOUT in message


def test_missing_metadata_file_names_the_path(tmp_path, cli_error):
    message = cli_error("fma-info", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "fma_metadata" / "tracks.csv") in message and "not found" in message


@pytest.mark.parametrize("args, expected", [
    (["--subset", "tiny"], "unknown subset 'tiny' (valid: small, medium, large, full)"),
    (["--split", "dev"], "unknown split 'dev' (valid: training, validation, test)"),
])
def test_unknown_subset_or_split_names_the_valid_ones(args, expected, demo_corpus, cli_error):
    message = cli_error("fma-info", demo_corpus, *args)
    assert str(demo_corpus / "fma_metadata" / "tracks.csv") in message and expected in message


def test_a_file_instead_of_a_folder_is_named_as_such(tmp_path, cli_error):
    a_file = tmp_path / "tracks.csv"
    a_file.write_text("track_id\n")
    message = cli_error("fma-info", a_file)
    assert message == f"error: {a_file}: not a folder (expected the FMA folder holding fma_metadata/)"
