"""`verify_build(out)`: re-read everything a manifest promises and name every problem.

Per shard: sha256 and byte size against the manifest, the USTAR headers (checksums), the fixed stride
(sample i at byte i * record_bytes), each sample's `.cls`/`.json`/audio members with the right sizes and
consistent content, the sample count, the end-of-archive blocks, the `.idx` against the tar's real
offsets.  When the build's journal is present, a per-sample CRC32 names the sample whose audio bytes
changed.  A truncated shard is reported as such, never a crash.  Works on local folders and s3://.
"""
from __future__ import annotations

import json
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from fmashard import storage
from fmashard.errors import NotFoundError, StorageError, UserError
from fmashard.format.codecs import CODECS
from fmashard.format.manifest import is_inside, listed_paths, load_manifest, manifest_url
from fmashard.format.tar import BLOCK, clip_of, padded, split_member, track_id_of
from shard_tools.build_output import BUILD_FILE, JOURNAL_DIR
from shard_tools.dali_index import format_index, group_members


@dataclass
class VerifyReport:
    url: str
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    samples: int = 0
    bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        what = "shard" if self.shards else "file"
        verdict = "OK" if self.ok else plural(len(self.problems), "problem")
        return (f"{verdict}: {self.url}: {plural(self.shards or self.samples, what)}, "
                f"{plural(self.samples, 'sample')}, {self.bytes / 1e6:.1f} MB checked")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class Member:
    name: str
    offset: int  # of the header
    size: int
    content: bytes | None = None  # .cls/.json only
    crc32: int = 0  # audio only

    @property
    def key(self) -> str:
        return split_member(self.name)[0]

    @property
    def ext(self) -> str:
        return split_member(self.name)[1]


def verify_build(out: str) -> VerifyReport:
    report = VerifyReport(str(out))
    try:
        manifest_url, manifest = read_build_manifest(out)
    except ManifestProblem as exc:  # a build without a usable manifest: a problem, not a usage error
        report.problems.append(str(exc))
        return report
    base = storage.parent_url(manifest_url)
    if not any(entry.get("num_samples") or entry.get("shards") or entry.get("files")
               for entry in manifest["splits"].values() if isinstance(entry, dict)):
        report.problems.append(f"{manifest_url}: an empty build: no samples in any split")
    for split, entry in manifest["splits"].items():
        outside = [rel for rel in listed_paths({"splits": {split: entry}}) if not is_inside(rel)]
        if outside:  # never read what a manifest points to outside its own folder
            report.problems += [f"{manifest_url}: split {split}: path {rel!r} is outside the manifest's folder "
                                "(manifest paths must be relative, without '..')" for rel in outside]
            continue
        if manifest.get("layout", "shards") == "files":
            report.problems += verify_files(base, manifest, entry.get("files", []), report)
            continue
        shards = entry.get("shards", [])
        if sum(s["num_samples"] for s in shards) != entry.get("num_samples"):
            report.problems.append(f"manifest: split {split} num_samples {entry.get('num_samples')} is not the "
                                   f"sum of its shards' ({sum(s['num_samples'] for s in shards)})")
        for shard in shards:
            report.problems += verify_shard(base, manifest, shard)
            report.shards += 1
            report.samples += shard["num_samples"]
            report.bytes += shard["num_bytes"]
    return report


def _journal_crcs(base: str, shard: dict) -> dict[str, int]:
    """key -> crc32 of its audio, from the build journal (absent: {})."""
    name = PurePosixPath(shard["path"]).stem
    try:
        record = json.loads(storage.read_bytes(storage.join_url(base, JOURNAL_DIR, f"{name}.json")))
    except (StorageError, ValueError):
        return {}
    if record.get("sha256") != shard.get("sha256") or "crc32" not in record:
        return {}
    return dict(zip(record["keys"], record["crc32"]))


def read_members(stream, shard: str, problems: list[str], sha) -> tuple[list[Member], int, bool]:
    """Walk the tar headers; returns the members read, the bytes read (all hashed into `sha`) and whether
    the walk reached the end-of-archive blocks (False: truncated or damaged, already reported)."""
    members, pos = [], 0

    def read(n: int) -> bytes:
        nonlocal pos
        data = stream.read(n)
        sha.update(data)
        pos += len(data)
        return data

    def drain() -> int:
        rest = 0
        while chunk := read(1 << 20):
            rest += len(chunk)
        return rest

    def last_key() -> str:
        return f" after key {members[-1].key}" if members else ""

    while True:
        header = read(BLOCK)
        if len(header) < BLOCK:
            problems.append(f"{shard}: truncated at byte {pos}{last_key()} (no end-of-archive blocks)")
            return members, pos, False
        if header.count(0) == BLOCK:
            second = read(BLOCK)
            if len(second) < BLOCK:
                problems.append(f"{shard}: truncated at byte {pos}{last_key()} (inside the end-of-archive blocks)")
                return members, pos, False
            if second.count(0) != BLOCK:
                problems.append(f"{shard}: a single zero block at byte {pos - 2 * BLOCK}{last_key()}")
            rest = drain()
            if rest:
                problems.append(f"{shard}: {rest} unexpected bytes after the end-of-archive blocks")
            return members, pos, True
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            problems.append(f"{shard}: damaged tar header at byte {pos - BLOCK}{last_key()} ({exc})")
            drain()  # hash the rest; the sha256 check reports the damage as well
            return members, pos, False
        member = Member(info.name, pos - BLOCK, info.size)
        left, crc, chunks = info.size, 0, []
        while left > 0:  # in pieces: a damaged size field must not allocate gigabytes
            data = read(min(left, 1 << 20))
            if not data:
                break
            crc = zlib.crc32(data, crc)
            chunks.append(data)
            left -= len(data)
        if member.ext in ("cls", "json") and info.size < BLOCK:  # content checked by check_sample
            member.content = b"".join(chunks)
        padding = read(padded(info.size) - info.size) if not left else b""
        if left or len(padding) < padded(info.size) - info.size:
            problems.append(f"{shard}: truncated at byte {pos} inside {info.name}")
            return members, pos, False
        member.crc32 = crc
        members.append(member)


def check_sample(shard: str, i: int, group: list[Member], manifest: dict, crcs: dict) -> list[str]:
    key = group[0].key
    where = f"{shard} key {key}"
    codec = CODECS.get(manifest["codec"])
    audio_ext = codec.ext if codec else manifest["codec"]
    problems = []
    if group[0].offset != i * manifest["record_bytes"]:
        expected = i * manifest["record_bytes"]
        problems.append(f"{where}: sample {i} starts at byte {group[0].offset}, expected {expected}")
    exts = [m.ext for m in group]
    if exts != ["cls", "json", audio_ext]:
        return problems + [f"{where}: members {exts}, expected ['cls', 'json', '{audio_ext}']"]
    cls, meta, audio = group
    if audio.size != manifest["sample_bytes"]:
        problems.append(f"{where}: .{audio_ext} is {audio.size} bytes, expected {manifest['sample_bytes']}")
    if key in crcs and crcs[key] != audio.crc32:
        problems.append(f"{where}: .{audio_ext} bytes differ from what was written (crc32 mismatch)")
    if cls.content is None or meta.content is None:
        return problems + [f"{where}: .cls/.json must be < {BLOCK} bytes, got {cls.size}/{meta.size}"]
    try:
        label = int(cls.content.decode("ascii"))
        info = json.loads(meta.content)
    except (UnicodeDecodeError, ValueError) as exc:
        return problems + [f"{where}: unreadable .cls/.json ({exc})"]
    vocabulary = manifest.get("vocabulary") or []
    track_id = track_id_of(key)
    expected = {"track_id": track_id if track_id >= 0 else key, "label": label,
                "sample_rate": manifest["sample_rate"]}
    if "_" in key.rsplit("/", 1)[-1]:   # a clip of a longer track (--long-tracks all): its number too
        expected["clip"] = clip_of(key)
    if vocabulary and 0 <= label < len(vocabulary):
        expected["genre"] = vocabulary[label]
    elif vocabulary:
        problems.append(f"{where}: label {label} outside the vocabulary (0..{len(vocabulary) - 1})")
    for name, value in expected.items():
        if not isinstance(info, dict) or info.get(name) != value:
            got = info.get(name) if isinstance(info, dict) else info
            problems.append(f"{where}: .json {name} is {got!r}, expected {value!r}")
    return problems


def verify_shard(base: str, manifest: dict, shard: dict) -> list[str]:
    import hashlib

    url, name = storage.join_url(base, shard["path"]), shard["path"]
    problems, sha = [], hashlib.sha256()
    try:
        with storage.open_stream(url) as stream:
            members, size, complete = read_members(stream, name, problems, sha)
    except StorageError as exc:
        return [f"{name}: cannot read ({exc})"]
    if size != shard["num_bytes"]:
        problems.append(f"{name}: {size} bytes, manifest says {shard['num_bytes']}")
    if sha.hexdigest() != shard["sha256"]:
        problems.append(f"{name}: sha256 mismatch (manifest {shard['sha256'][:12]}…, file {sha.hexdigest()[:12]}…)")
    samples = group_members((m.name, m.offset + BLOCK, m.size) for m in members)
    by_name = {m.name: m for m in members}
    crcs = _journal_crcs(base, shard)
    if not complete and samples and len(samples[-1]) < 3:
        samples.pop()  # the sample the shard broke off in: already reported
    for i, entries in enumerate(samples):
        problems += check_sample(name, i, [by_name[e[3]] for e in entries], manifest, crcs)
    if len(samples) != shard["num_samples"]:
        problems.append(f"{name}: {len(samples)} whole samples, manifest says {shard['num_samples']}")
    if complete:  # a broken-off walk cannot say what the .idx should be
        problems += check_index(base, shard, samples)
    return problems


def check_index(base: str, shard: dict, samples) -> list[str]:
    index = shard.get("index") or shard["path"][: -len(".tar")] + ".idx"
    try:
        text = storage.read_bytes(storage.join_url(base, index)).decode("utf-8", "replace")
    except StorageError as exc:
        return [f"{index}: cannot read the DALI index ({exc})"]
    expected = format_index(samples)
    if text == expected:
        return []
    got_lines, want_lines = text.splitlines(), expected.splitlines()
    for n, (got, want) in enumerate(zip(got_lines, want_lines)):
        if got != want:
            key = split_member(want.split()[3])[0] if n else None
            where = f" (sample key {key})" if key else ""
            return [f"{index}: line {n + 1}{where} does not match the tar: {got[:60]!r} != {want[:60]!r}"]
    return [f"{index}: {len(got_lines)} lines, the tar needs {len(want_lines)}"]


def verify_files(base: str, manifest: dict, files: list[dict], report: VerifyReport) -> list[str]:
    """--layout files: every .pt loads as a float32 1-D tensor of clip_samples values."""
    import io

    import torch

    problems = []
    for entry in files:
        url = storage.join_url(base, entry["path"])
        try:
            data = storage.read_bytes(url)
            tensor = torch.load(io.BytesIO(data), weights_only=True)
        except StorageError as exc:
            problems.append(f"{entry['path']}: cannot read ({exc})")
            continue
        except Exception as exc:  # torch's unpickling errors of every kind
            problems.append(f"{entry['path']}: not a loadable tensor ({type(exc).__name__}: {exc})")
            continue
        if tensor.dtype != torch.float32 or tuple(tensor.shape) != (manifest["clip_samples"],):
            problems.append(f"{entry['path']}: {tensor.dtype} {tuple(tensor.shape)}, expected "
                            f"float32 ({manifest['clip_samples']},)")
        report.samples += 1
        report.bytes += len(data)
    return problems


# ------------------------------------------------------------------------------- reading the manifest back
class ManifestProblem(UserError):
    """The folder is (or was meant to be) a build, but its manifest is missing, unreadable or of an unknown
    format: `verify` reports it as a problem with the build (exit 1), not as a usage error."""


def read_build_manifest(out: str) -> tuple[str, dict]:
    """(manifest URL, manifest) for a build folder/prefix or a manifest.json URL.  UserError for a path
    that is not there or not a folder; ManifestProblem for a build folder without a usable manifest.
    The paths it lists are not checked here: `verify` reports each one outside the folder."""
    out = storage.check_scheme(str(out))
    url = manifest_url(out)
    path = storage.local_path(out)
    if path is not None:
        if path.is_file() and not out.endswith(".json"):
            raise UserError(f"{out}: a file, not a build folder (pass the folder `fmashard build --out` wrote, "
                            "or its manifest.json)")
        if not (path if not out.endswith(".json") else path.parent).is_dir():
            raise UserError(f"{out}: no such build folder or manifest")
    try:
        return url, load_manifest(url, invalid=ManifestProblem, check_paths=False)
    except NotFoundError:
        raise _no_manifest(out, url) from None


def _no_manifest(out: str, url: str) -> UserError:
    if storage.exists(storage.join_url(storage.parent_url(url), BUILD_FILE)):
        return ManifestProblem(f"{out}: incomplete build: no manifest.json yet (the build was interrupted or "
                               "failed); re-run the same `fmashard build` command to finish it")
    if storage.is_remote(url):  # no listing: a prefix with nothing of ours may not exist at all
        return UserError(f"{url}: no manifest here (was `fmashard build` run into this prefix?)")
    return ManifestProblem(f"{url}: no manifest here (was `fmashard build` run into this folder?)")
