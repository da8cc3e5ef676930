"""`fmashard verify`: OK on a good build; names the shard (and key) of a flipped byte, a truncated shard,
a damaged header, a wrong .idx, a missing shard; exit 1 on problems, 2 without a manifest."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from fmashard.cli import main
from shard_tools.verify import verify_build

sys.path.insert(0, str(Path(__file__).parent))
from test_build import build_once  # noqa: E402 - the same build as test_build's, made once per session


@pytest.fixture(scope="module")
def base(demo_corpus, tmp_path_factory):
    return build_once(tmp_path_factory, Path(demo_corpus))


@pytest.fixture
def copy(base, tmp_path):
    """A hard-linked copy of the good build: damage files only through `rewrite` (never in place)."""
    out = tmp_path / "build"
    shutil.copytree(base, out, copy_function=os.link)
    return out


def rewrite(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def verify_cli(monkeypatch, capsys, out) -> tuple[int, list[str]]:
    monkeypatch.setattr(sys, "argv", ["fmashard", "verify", str(out)])
    code = 0  # a command that succeeds may simply return
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, [line for line in (captured.out + captured.err).splitlines() if line.strip()]


def second_sample(tar_path: Path) -> tuple[str, tarfile.TarInfo, tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        members = tar.getmembers()
    return members[3].name.split(".")[0], members[4], members[5]  # key, its .json, its .pcm


def test_good_build_is_ok(base, monkeypatch, capsys):
    code, lines = verify_cli(monkeypatch, capsys, base)
    manifest = json.loads((base / "manifest.json").read_text())
    assert code == 0 and len(lines) == 1 and lines[0].startswith("OK: ")
    assert f"{manifest['totals']['tracks_written']} samples" in lines[0]


def test_flipped_pcm_byte_names_shard_and_key(copy, monkeypatch, capsys):
    shard = copy / "training" / "training-000001.tar"
    key, _, pcm = second_sample(shard)
    data = bytearray(shard.read_bytes())
    data[pcm.offset_data + 1000] ^= 0x01
    rewrite(shard, bytes(data))
    code, lines = verify_cli(monkeypatch, capsys, copy)
    problems = lines[:-1]
    assert code == 1 and len(problems) == 2 and lines[-1].startswith("2 problems")
    assert any("training/training-000001.tar: sha256 mismatch" in line for line in problems)
    assert any(f"training/training-000001.tar key {key}: .pcm bytes differ" in line for line in problems)
    assert all("training-000001" in line for line in problems)


def test_flipped_byte_without_journal_still_names_the_shard(copy):
    shutil.rmtree(copy / ".fmashard-journal")
    shard = copy / "validation" / "validation-000000.tar"
    data = bytearray(shard.read_bytes())
    data[-2000] ^= 0x80
    rewrite(shard, bytes(data))
    report = verify_build(copy)
    assert report.problems == [report.problems[0]] and "validation/validation-000000.tar: sha256 mismatch" \
        in report.problems[0]


def test_truncated_shard(copy, monkeypatch, capsys):
    shard = copy / "training" / "training-000000.tar"
    key, _, pcm = second_sample(shard)
    rewrite(shard, shard.read_bytes()[: pcm.offset_data + 4321])
    code, lines = verify_cli(monkeypatch, capsys, copy)
    assert code == 1
    truncated = [line for line in lines if "truncated" in line]
    assert truncated and truncated[0].startswith("training/training-000000.tar: truncated") and key in truncated[0]
    assert any("samples, manifest says" in line for line in lines)


def test_damaged_header_and_wrong_json(copy):
    shard = copy / "test" / "test-000000.tar"
    key, meta, _ = second_sample(shard)
    data = bytearray(shard.read_bytes())
    data[meta.offset + 10] ^= 0x01  # inside the .json member's header name: checksum fails
    rewrite(shard, bytes(data))
    problems = verify_build(copy).problems
    assert any(p.startswith("test/test-000000.tar: damaged tar header") for p in problems), problems


def test_wrong_idx_names_the_sample(copy):
    idx = copy / "training" / "training-000002.idx"
    lines = idx.read_text().splitlines(keepends=True)
    key = lines[2].split()[3].split(".")[0]
    lines[2] = lines[2].replace("cls", "cl5", 1)
    rewrite(idx, "".join(lines).encode())
    problems = verify_build(copy).problems
    assert len(problems) == 1 and problems[0].startswith("training/training-000002.idx: line 3")
    assert key in problems[0]


def test_missing_shard(copy):
    (copy / "training" / "training-000000.tar").unlink()
    problems = verify_build(copy).problems
    assert len(problems) == 1 and problems[0].startswith("training/training-000000.tar: cannot read")


def test_missing_shard_is_one_problem(copy, monkeypatch, capsys):
    (copy / "training" / "training-000000.tar").unlink()
    code, lines = verify_cli(monkeypatch, capsys, copy)
    assert code == 1 and len(lines) == 2 and lines[1].startswith(f"1 problem: {copy}: ")


def test_a_path_that_does_not_exist_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    code, lines = verify_cli(monkeypatch, capsys, tmp_path / "nowhere")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path / "nowhere") in lines[0]


def test_a_file_is_a_one_line_error(copy, monkeypatch, capsys):
    shard = copy / "training" / "training-000000.tar"
    code, lines = verify_cli(monkeypatch, capsys, shard)
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"error: {shard}: ") and "not a build folder" in lines[0]


def manifest_problem(monkeypatch, capsys, out) -> str:
    """verify OUT must find exactly one problem with the manifest: exit 1, the problem, the summary."""
    code, lines = verify_cli(monkeypatch, capsys, out)
    assert code == 1 and len(lines) == 2 and lines[1].startswith("1 problem: "), (code, lines)
    assert not lines[0].startswith("error: ")
    return lines[0]


def test_no_manifest_in_a_folder_is_a_problem(tmp_path, monkeypatch, capsys):
    line = manifest_problem(monkeypatch, capsys, tmp_path)
    assert str(tmp_path / "manifest.json") in line and "was `fmashard build` run into this folder?" in line


def test_an_interrupted_build_says_to_rerun_the_build(copy, monkeypatch, capsys):
    (copy / "manifest.json").unlink()
    line = manifest_problem(monkeypatch, capsys, copy)
    assert str(copy) in line and "incomplete build" in line and "re-run the same `fmashard build` command" in line


@pytest.mark.parametrize("change, expected", [
    (lambda m: {**m, "format_version": 99}, "format_version 99 is not one this fmashard reads"),
    (lambda m: {**m, "format": "other"}, "format is 'other', expected 'fmashard'"),
    (lambda m: "[1, 2]", "expected an object"),
])
def test_an_unreadable_manifest_is_a_problem(change, expected, copy, monkeypatch, capsys):
    manifest = json.loads((copy / "manifest.json").read_text())
    changed = change(manifest)
    rewrite(copy / "manifest.json", (changed if isinstance(changed, str) else json.dumps(changed)).encode())
    line = manifest_problem(monkeypatch, capsys, copy)
    assert str(copy / "manifest.json") in line and expected in line


def test_a_manifest_json_error_shows_line_and_column(copy, monkeypatch, capsys):
    rewrite(copy / "manifest.json", b'{"format": "fmashard",\n "splits": {]}')
    line = manifest_problem(monkeypatch, capsys, copy)
    assert str(copy / "manifest.json") in line and "line 2 column 13" in line


def test_an_empty_build_is_a_problem(copy, monkeypatch, capsys):
    manifest = json.loads((copy / "manifest.json").read_text())
    for split in manifest["splits"].values():
        split.update(num_samples=0, num_bytes=0, shards=[])
    rewrite(copy / "manifest.json", json.dumps(manifest).encode())
    line = manifest_problem(monkeypatch, capsys, copy)
    assert "no samples" in line


@pytest.mark.parametrize("path", ["../elsewhere/x.tar", "/etc/passwd", "http://other.example/x.tar"])
def test_a_shard_path_outside_the_build_is_a_problem(path, copy, monkeypatch, capsys):
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["test"]["shards"][0]["path"] = path
    rewrite(copy / "manifest.json", json.dumps(manifest).encode())
    code, lines = verify_cli(monkeypatch, capsys, copy)
    assert code == 1 and lines[-1].startswith("1 problem: ")
    assert str(copy / "manifest.json") in lines[0] and repr(path) in lines[0] and "outside" in lines[0]


@pytest.mark.parametrize("url", ["gs://bucket/x", "ftp://host/x"])
def test_an_unsupported_scheme_is_named(url, monkeypatch, capsys):
    code, lines = verify_cli(monkeypatch, capsys, url)
    expected = (f"error: {url}: unsupported URL scheme {url.split(':')[0]!r} "
                "(supported: local paths, file://, http(s)://, s3://)")
    assert code == 2 and lines == [expected]
