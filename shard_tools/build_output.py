"""OUT as the build sees it: a local folder, or an `s3://` prefix written through a local staging folder.

Files that belong to a build: `manifest.json` (written last), `.fmashard-build.json` (the build's
arguments, written first), `.fmashard-journal/{split}-{index}.json` (one record per finished shard,
written after the shard), the split folders' `.tar`/`.idx` (or `.pt`) files.  Every file is written to
`name.tmp-<pid>` and renamed (`fmashard.storage.atomic`), so a kill -9 leaves only complete files plus
`*.tmp-*` leftovers.
`--overwrite` deletes only the files the previous build's manifest or journal lists (plus those
leftovers) and refuses a folder that holds anything else: a run's best.pt next to the shards survives.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from fmashard import storage
from fmashard.errors import NotFoundError, UserError
from fmashard.format.manifest import MANIFEST_NAME

BUILD_FILE = ".fmashard-build.json"
JOURNAL_DIR = ".fmashard-journal"
# the temporary names a build writes: {split}/{split}-000000.tar|.idx, {split}/000002.pt, the root files
_OUR_TMP = re.compile(r"(?:([^/]+)/(?:\1-\d{6}\.(?:tar|idx)|\d{6}\.pt)|manifest\.json|\.fmashard-build\.json"
                      r"|\.fmashard-probe|\.fmashard-journal/[^/]+\.json)\.tmp-\d+")


class BuildOutput:
    def __init__(self, url: str):
        self.url = storage.check_scheme(str(url))
        backend = storage.backend_for(self.url)
        if not backend.can_write:
            raise UserError(f"{self.url}: a build writes to a local folder or an s3:// prefix only")
        self.remote = not backend.local   # no listing: files are staged here, then uploaded
        if self.remote:
            self.root = Path(tempfile.mkdtemp(prefix="fmashard-build-"))
        else:
            self.root = backend.local_path(self.url)
            self._check_writable()

    def _check_writable(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.url}: exists and is not a folder (choose another --out)")
        probe = storage.temp_name(self.root / ".fmashard-probe")
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
            return storage.read_bytes(self.url_of(rel)).decode("utf-8")
        except NotFoundError:
            return None

    def write_text(self, rel: str, text: str) -> None:
        storage.write_bytes_atomic(self.url_of(rel), text.encode("utf-8"))

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
            with storage.open_stream(self.url_of(rel)) as stream:
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
        """--overwrite: delete what a previous build recorded as its own (its manifest and journal, the
        files they list, our `*.tmp-<pid>` leftovers); refuse a folder holding any other file.  On s3 new
        objects replace old ones and the fresh build id disowns old journal records."""
        if self.remote:
            return
        owned = self._owned_files()
        files = sorted(p for p in self.root.rglob("*") if p.is_file() or p.is_symlink())
        foreign = [p for p in files if not _is_ours(p.relative_to(self.root).as_posix(), owned)]
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise UserError(f"{self.url}: --overwrite replaces only what fmashard wrote, and this folder holds "
                            f"other files ({foreign[0]}{more}); move them away or choose another --out")
        for path in files:
            path.unlink()
        shutil.rmtree(self.root / JOURNAL_DIR, ignore_errors=True)
        for folder in sorted({p.parent for p in files} - {self.root}, key=lambda p: -len(p.parts)):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def _owned_files(self) -> set[str]:
        """Relative paths the manifest and the journal records list (a kill -9 may have left either)."""
        texts = [self.read_text(MANIFEST_NAME)]
        journal = self.root / JOURNAL_DIR
        if journal.is_dir():
            texts += [p.read_text(encoding="utf-8", errors="replace") for p in journal.glob("*.json")]
        owned = {MANIFEST_NAME, BUILD_FILE}
        for text in texts:
            owned |= _listed_paths(_json_or_none(text))
        return owned

    def remove_leftovers(self) -> None:
        """Temporary files of an interrupted run (ours are always named `*.tmp-<pid>`)."""
        if not self.remote:
            for path in self.root.rglob("*.tmp-*"):
                if _OUR_TMP.fullmatch(path.relative_to(self.root).as_posix()):
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


def _json_or_none(text: str | None):
    try:
        return json.loads(text) if text else None
    except json.JSONDecodeError:
        return None


def _listed_paths(data) -> set[str]:
    """The shard, .idx and .pt paths a manifest or a journal record lists."""
    if not isinstance(data, dict):
        return set()
    splits = data.get("splits") if isinstance(data.get("splits"), dict) else {}
    lists = [data.get("files")] + [split.get(key) for split in splits.values() if isinstance(split, dict)
                                   for key in ("shards", "files")]
    entries = [data] + [e for entries in lists if isinstance(entries, list) for e in entries]
    return {e[k] for e in entries if isinstance(e, dict) for k in ("path", "index") if isinstance(e.get(k), str)}


def _is_ours(rel: str, owned: set[str]) -> bool:
    return rel in owned or rel.startswith(f"{JOURNAL_DIR}/") or bool(_OUR_TMP.fullmatch(rel))


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

    def discard(self, names: list[str]) -> None:
        for name in names:
            storage.delete(self.out.url_of(self.rel(name)))

    def save(self, name: str, record: dict) -> None:
        self.out.write_text(self.rel(name), json.dumps({"build_id": self.build_id, **record}) + "\n")
