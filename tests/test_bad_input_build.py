"""`fmashard build` on awkward input: --overwrite never deletes files it did not write, a build that
writes nothing is an error, truthful skip reasons for bad audio, unsupported URL schemes, SIGINT."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_build import BROKEN, SHARD_SIZE, assert_one_line_error, fma_dir, mini_fma, run_cli  # noqa: E402,F401


def build_cli(monkeypatch, capsys, fma, out, *extra) -> tuple[int, str, str]:
    return run_cli(monkeypatch, capsys, "build", "--fma-dir", fma, "--out", out, "--shard-size", SHARD_SIZE,
                   "--workers", "1", *extra)


@pytest.fixture(scope="module")
def mini_build(mini_fma, tmp_path_factory) -> Path:
    """A finished shards build of the mini corpus (copy it before changing anything)."""
    from shard_tools.build import BuildConfig, build_shards

    out = tmp_path_factory.mktemp("mini-build") / "out"
    build_shards(BuildConfig(fma_dir=mini_fma, out=out, shard_size=SHARD_SIZE, workers=1))
    return out


def tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- --overwrite (item 1)
@pytest.mark.parametrize("foreign", ["myrun/best.pt", "notes/data.tar", "training/data.tar", "readme.txt"])
def test_overwrite_refuses_files_it_did_not_write(foreign, mini_build, mini_fma, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(mini_build, out)
    (out / foreign).parent.mkdir(parents=True, exist_ok=True)
    (out / foreign).write_bytes(b"somebody's file")
    before = tree(out)
    code, _, err = build_cli(monkeypatch, capsys, mini_fma, out, "--overwrite", "--codec", "f16")
    assert code == 2
    assert_one_line_error(err, out / foreign, "--overwrite")
    assert tree(out) == before


def test_overwrite_replaces_a_previous_build(mini_build, mini_fma, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(mini_build, out)
    (out / "training" / "training-000000.tar.tmp-4242").write_bytes(b"leftover of a killed run")
    old = set(tree(out))
    code, stdout, err = build_cli(monkeypatch, capsys, mini_fma, out, "--overwrite", "--codec", "f16")
    assert code == 0, err
    assert "6 tracks written" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["codec"] == "f16"
    listed = {s[k] for split in manifest["splits"].values() for s in split["shards"] for k in ("path", "index")}
    journal = {p.relative_to(out).as_posix() for p in (out / ".fmashard-journal").iterdir()}
    assert set(tree(out)) == listed | journal | {"manifest.json", ".fmashard-build.json"}
    assert "training/training-000000.tar.tmp-4242" in old


def test_overwrite_of_an_interrupted_build_uses_its_journal(mini_build, mini_fma, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    shutil.copytree(mini_build, out)
    (out / "manifest.json").unlink()  # killed before the manifest: the journal still names its shards
    code, _, err = build_cli(monkeypatch, capsys, mini_fma, out, "--overwrite", "--codec", "f16")
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["codec"] == "f16"


# ----------------------------------------------------------------------------- bad audio (item 12)
def corpus_with(mini_fma: Path, tmp_path: Path, replace: dict[int, bytes]) -> Path:
    """The mini corpus with per-file links to its audio, some files replaced by `replace[track_id]`."""
    from shard_tools.fma_metadata import audio_path, load_selection

    fma = tmp_path / "fma"
    (fma / "fma_metadata").mkdir(parents=True)
    shutil.copy(mini_fma / "fma_metadata" / "tracks.csv", fma / "fma_metadata" / "tracks.csv")
    for refs in load_selection(mini_fma, "small").tracks.values():
        for ref in refs:
            path = audio_path(fma, "small", ref.track_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            if ref.track_id in replace:
                path.write_bytes(replace[ref.track_id])
            else:
                path.symlink_to(audio_path(mini_fma, "small", ref.track_id).resolve())
    return fma


@pytest.mark.parametrize("workers", ["1", "2"])
def test_bad_mp3s_get_truthful_reasons_and_a_quiet_terminal(workers, mini_fma, tmp_path):
    from conftest import run_fmashard
    from shard_tools.fma_metadata import load_selection

    garbage, empty = (ref.track_id for ref in load_selection(mini_fma, "small").tracks["training"][:2])
    fma = corpus_with(mini_fma, tmp_path, {garbage: b"\xff\xfb\x90\x00" + bytes(range(256)) * 40, empty: b""})
    out = tmp_path / "out"
    result = run_fmashard("build", "--fma-dir", fma, "--out", out, "--workers", workers, "--shard-size", SHARD_SIZE)
    assert result.returncode == 0, result.stderr
    for noise in ("Illegal Audio-MPEG-Header", "resync", "Cannot read next header", "Note:"):
        assert noise not in result.stderr + result.stdout
    reasons = {s["track_id"]: s["reason"] for s in json.loads((out / "manifest.json").read_text())["skipped"]}
    assert reasons[empty] == "empty file"
    assert reasons[garbage].startswith("unreadable audio (") and "Illegal Audio-MPEG-Header" in reasons[garbage]
    assert reasons[BROKEN].startswith("unreadable audio (")
    assert not any("does not exist" in r or "pipe" in r for r in reasons.values()), reasons


# ----------------------------------------------------------------------------- nothing written (item 8)
def test_no_audio_folder_is_an_error_before_any_output(mini_fma, tmp_path, monkeypatch, capsys):
    fma = tmp_path / "fma"
    (fma / "fma_metadata").mkdir(parents=True)
    shutil.copy(mini_fma / "fma_metadata" / "tracks.csv", fma / "fma_metadata" / "tracks.csv")
    code, _, err = build_cli(monkeypatch, capsys, fma, tmp_path / "o1")
    assert code == 2
    assert_one_line_error(err, fma / "fma_small")
    code, _, err = build_cli(monkeypatch, capsys, mini_fma, tmp_path / "o2", "--subset", "medium")
    assert code == 2
    assert_one_line_error(err, mini_fma / "fma_medium")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_a_build_that_writes_nothing_is_an_error(mini_fma, tmp_path, monkeypatch, capsys):
    from shard_tools.fma_metadata import load_selection

    ids = [ref.track_id for refs in load_selection(mini_fma, "small").tracks.values() for ref in refs]
    fma = corpus_with(mini_fma, tmp_path, {tid: b"" for tid in ids})
    out = tmp_path / "out"
    code, _, err = build_cli(monkeypatch, capsys, fma, out)
    assert code == 2
    err = "\n".join(line for line in err.splitlines() if not line.startswith("decoding "))  # the progress bar
    assert_one_line_error(err, out, "no track written", "empty file", "fma_small/")
    assert not (out / "manifest.json").exists()
    # once the audio is there, the same command builds everything: nothing is kept from the empty run
    fixed = corpus_with(mini_fma, tmp_path / "fixed", {})
    shutil.rmtree(fma / "fma_small")
    shutil.move(fixed / "fma_small", fma / "fma_small")
    code, stdout, err = build_cli(monkeypatch, capsys, fma, out)
    assert code == 0, err
    assert "6 tracks written, 1 skipped" in stdout


# ----------------------------------------------------------------------------- URL schemes, Ctrl-C (item 16)
@pytest.mark.parametrize("url", ["gs://bucket/x", "ftp://host/x"])
def test_an_unsupported_out_scheme_is_named(url, mini_fma, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # taken for a local path, it would become the folder ./gs:/bucket/x
    code, _, err = build_cli(monkeypatch, capsys, mini_fma, url)
    assert code == 2
    assert err.strip() == (f"error: {url}: unsupported URL scheme {url.split(':')[0]!r} "
                           "(supported: local paths, file://, http(s)://, s3://)")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_says_how_to_continue(fma_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fmashard", "build", "--fma-dir", str(fma_dir), "--out", str(out),
           "--workers", "1", "--shard-size", SHARD_SIZE]
    # Ctrl-C as a terminal delivers it: a test run in the background of a non-interactive shell (`make test &`)
    # inherits SIGINT ignored, and so would the build, which then finishes as if nothing was pressed
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not list(out.glob(".fmashard-journal/*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "Traceback" not in stderr + stdout
    lines = [line for line in stderr.splitlines() if not line.startswith("decoding ")]  # the progress bar
    assert lines == ["interrupted: re-run the same command to continue"], stderr
    assert not (out / "manifest.json").exists()
