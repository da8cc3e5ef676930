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
    with pytest.raises(SystemExit) as exc:
        main()
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return exc.value.code, [line for line in (captured.out + captured.err).splitlines() if line.strip()]


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


def test_no_manifest_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    code, lines = verify_cli(monkeypatch, capsys, tmp_path)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path) in lines[0]
