"""OUT as the build sees it: a local folder, or an `s3://` prefix written through a local staging folder.

Files that belong to a build: `manifest.json` (written last), `.fmashard-build.json` (the build's
arguments, written first), `.fmashard-journal/{split}-{index}.json` (one record per finished shard,
written after the shard), the split folders' `.tar`/`.idx` (or `.pt`) files.  Every file is written to
`name.tmp-<pid>` and `os.replace`d, so a kill -9 leaves only complete files plus `*.tmp-*` leftovers.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from fmashard import storage
from fmashard.errors import NotFoundError, UserError

BUILD_FILE = ".fmashard-build.json"
JOURNAL_DIR = ".fmashard-journal"
MANIFEST_NAME = "manifest.json"
_OUR_PATTERNS = ("*.tar", "*.idx", "*.pt", "*.tmp-*")


class BuildOutput:
    def __init__(self, url: str):
        self.url = str(url)
        self.remote = storage.is_remote(self.url)
        if self.remote and storage.scheme_of(self.url) != "s3":
            raise UserError(f"{self.url}: a build writes to a local folder or an s3:// prefix only")
        if self.remote:
            self.root = Path(tempfile.mkdtemp(prefix="fmashard-build-"))
        else:
            self.root = storage.local_path(self.url)
            self._check_writable()

    def _check_writable(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.url}: exists and is not a folder (choose another --out)")
        probe = self.root / f".fmashard-probe.tmp-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"{self.url}: cannot write the output folder ({exc.strerror or exc})") from None

    # ------------------------------------------------------------------ paths
    def local(self, rel: str) -> Path:
        """Where `rel` is written on this machine (OUT itself, or the staging folder for s3)."""
        return self.root / rel

    def url_of(self, rel: str) -> str:
        return storage.join_url(self.url, rel)

    # ------------------------------------------------------------------ small files
    def read_text(self, rel: str) -> str | None:
        try:
            if self.remote:
                return storage.read_bytes(self.url_of(rel)).decode("utf-8")
            return self.local(rel).read_text(encoding="utf-8")
        except (FileNotFoundError, NotFoundError):
            return None

    def write_text(self, rel: str, text: str) -> None:
        if self.remote:
            storage.write_bytes_atomic(self.url_of(rel), text.encode("utf-8"))
            return
        path = self.local(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)

    # ------------------------------------------------------------------ finished files
    def publish(self, rels: list[str]) -> None:
        """s3: upload finished files in the given order and drop the staged copies; local: nothing to do."""
        if self.remote:
            for rel in rels:
                storage.upload_file(self.local(rel), self.url_of(rel))
                self.local(rel).unlink()

    def digest(self, rel: str) -> tuple[int, str] | None:
        """(size, sha256) of a published file, None if it is absent."""
        sha, size, buf = hashlib.sha256(), 0, bytearray(1 << 20)
        try:
            with storage.open_stream(self.url_of(rel) if self.remote else str(self.local(rel))) as stream:
                while n := stream.readinto(buf):
                    sha.update(memoryview(buf)[:n])
                    size += n
        except NotFoundError:
            return None
        return size, sha.hexdigest()

    # ------------------------------------------------------------------ lifecycle
    def is_empty(self) -> bool:
        if self.remote:  # no listing in the storage API: look for the files a build leaves
            return not any(storage.exists(self.url_of(rel)) for rel in (BUILD_FILE, MANIFEST_NAME))
        return not any(self.root.iterdir())

    def remove_ours(self) -> None:
        """--overwrite: delete the files a build writes (local; on s3 new objects replace old ones and the
        fresh build id disowns old journal records)."""
        if self.remote:
            return
        for name in (MANIFEST_NAME, BUILD_FILE):
            (self.root / name).unlink(missing_ok=True)
        shutil.rmtree(self.root / JOURNAL_DIR, ignore_errors=True)
        for split_dir in [p for p in self.root.iterdir() if p.is_dir()]:
            for pattern in _OUR_PATTERNS:
                for path in split_dir.glob(pattern):
                    path.unlink()
            if not any(split_dir.iterdir()):
                split_dir.rmdir()

    def remove_leftovers(self) -> None:
        """Temporary files of an interrupted run (ours are always named `*.tmp-<pid>`)."""
        if not self.remote:
            for path in self.root.rglob("*.tmp-*"):
                path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.remote:
            shutil.rmtree(self.root, ignore_errors=True)


def start_build(out: BuildOutput, identity: dict, overwrite: bool) -> str:
    """Refuse, resume or start over; write `.fmashard-build.json`; return the build id journal records
    must carry to be trusted."""
    previous = _parse_build_file(out.read_text(BUILD_FILE))
    if overwrite:
        out.remove_ours()
        previous = None
    elif previous is None:
        if not out.is_empty():
            raise UserError(f"{out.url} is not empty and holds no fmashard build; "
                            "choose an empty --out or pass --overwrite")
    elif previous["params"] != identity:
        raise UserError(f"{out.url} holds a build with other arguments ({_diff(previous['params'], identity)}); "
                        "pass --overwrite to replace it, or the same arguments to resume")
    build_id = previous["build_id"] if previous else uuid.uuid4().hex
    out.write_text(BUILD_FILE, json.dumps({"format": "fmashard-build", "build_id": build_id,
                                           "params": identity}, indent=1) + "\n")
    out.remove_leftovers()
    return build_id


def _parse_build_file(text: str | None) -> dict | None:
    try:
        data = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and {"build_id", "params"} <= data.keys() else None


def _diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


class Journal:
    """One small JSON record per finished shard, so a rerun knows what it can keep."""

    def __init__(self, out: BuildOutput, build_id: str):
        self.out, self.build_id = out, build_id

    @staticmethod
    def rel(name: str) -> str:
        return f"{JOURNAL_DIR}/{name}.json"

    def load(self, name: str) -> dict | None:
        try:
            record = json.loads(self.out.read_text(self.rel(name)) or "null")
        except json.JSONDecodeError:
            return None
        return record if isinstance(record, dict) and record.get("build_id") == self.build_id else None

    def save(self, name: str, record: dict) -> None:
        self.out.write_text(self.rel(name), json.dumps({"build_id": self.build_id, **record}) + "\n")
