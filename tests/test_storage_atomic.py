"""The one atomic writer: `name.tmp-<pid>` beside the target, renamed only when the write completed; a
failed write leaves the old file and no leftover; an OSError is one line naming the file."""
import json
import os

import pytest

from fmashard import storage
from fmashard.errors import StorageError
from fmashard.storage.atomic import AtomicFile, atomic_path, atomic_write, temp_name


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*.tmp-*"))


def test_the_temporary_name_is_the_one_build_output_cleans_up(tmp_path):
    assert temp_name(tmp_path / "training-000001.tar") == tmp_path / f"training-000001.tar.tmp-{os.getpid()}"


def test_atomic_write_replaces_the_file_only_when_the_block_completes(tmp_path):
    path = tmp_path / "sub" / "a.json"
    with atomic_write(path) as f:
        f.write(b"new")
        assert not path.exists() and temp_name(path).exists()   # parent folder made, target untouched
    assert path.read_bytes() == b"new" and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="boom"):
        with atomic_write(path) as f:
            f.write(b"half")
            raise ValueError("boom")
    assert path.read_bytes() == b"new" and leftovers(tmp_path) == []


def test_an_os_error_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    target = tmp_path / "file" / "a.json"   # its "folder" is a file
    with pytest.raises(StorageError, match=rf"^{target}: cannot write \("):
        with atomic_write(target) as f:
            f.write(b"x")
    with pytest.raises(StorageError, match=rf"^{target}: cannot write \("):
        storage.write_bytes_atomic(str(target), b"x")


def test_atomic_path_hands_a_writer_the_temporary_path(tmp_path):
    path = tmp_path / "000002.pt"
    with atomic_path(path) as tmp:
        assert tmp == temp_name(path)
        tmp.write_bytes(b"tensor")
    assert path.read_bytes() == b"tensor" and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError
    assert path.read_bytes() == b"tensor" and leftovers(tmp_path) == []


def test_atomic_file_streams_then_commits_or_aborts(tmp_path):
    out = AtomicFile(tmp_path / "a.tar")
    out.file.write(b"records")
    assert not (tmp_path / "a.tar").exists()
    out.commit()
    assert (tmp_path / "a.tar").read_bytes() == b"records" and leftovers(tmp_path) == []
    out = AtomicFile(tmp_path / "a.tar")
    out.file.write(b"other")
    out.abort()
    assert (tmp_path / "a.tar").read_bytes() == b"records" and leftovers(tmp_path) == []


def test_write_json_takes_path_then_object_and_keeps_each_callers_style(tmp_path):
    obj = {"b": [1, 2], "a": "x"}
    storage.write_json(tmp_path / "bench.json", obj)
    assert (tmp_path / "bench.json").read_text() == json.dumps(obj, indent=1) + "\n"
    storage.write_json(str(tmp_path / "config.json"), obj, indent=2, sort_keys=True)
    assert (tmp_path / "config.json").read_text() == json.dumps(obj, indent=2, sort_keys=True) + "\n"
    assert list(json.loads((tmp_path / "config.json").read_text())) == ["a", "b"]
