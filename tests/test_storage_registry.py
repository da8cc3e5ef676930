"""The scheme registry: what each backend says it can do, one-line refusals naming the URL, unknown
schemes named, and a new scheme added by registering one backend (no caller changes)."""
import io

import pytest

from fmashard import storage
from fmashard.errors import NotFoundError, StorageError, UserError
from fmashard.storage import registry
from fmashard.storage.base import Backend


class MemoryBackend(Backend):
    """A remote scheme over a dict, as a `gs.py` would be over a bucket."""

    label = "mem://"
    can_write = True

    def __init__(self):
        self.objects = {}

    def open(self, url, start, end, version=None):
        if url not in self.objects:
            raise NotFoundError(url, "not found")
        data = self.objects[url]
        return io.BytesIO(data[start:end]), len(data)

    def size(self, url):
        if url not in self.objects:
            raise NotFoundError(url, "not found")
        return len(self.objects[url])

    def write_atomic(self, url, data):
        self.objects[url] = bytes(data)

    def delete(self, url):
        self.objects.pop(url, None)


@pytest.mark.parametrize("url, scheme", [("shards/a.tar", "local"), ("/abs/a.tar", "local"),
                                         ("file:///abs/a.tar", "file"), ("http://h/a.tar", "http"),
                                         ("HTTPS://h/a.tar", "https"), ("s3://b/k.tar", "s3"),
                                         ("pipe:cat a.tar", "pipe")])
def test_scheme_of_names_the_registry_key(url, scheme):
    assert storage.scheme_of(url) == scheme
    assert storage.check_scheme(url) == url


@pytest.mark.parametrize("url", ["gs://bucket/x", "ftp://host/x", "local://x"])
def test_an_unknown_scheme_is_one_line_naming_it_wherever_it_is_used(url):
    expected = (f"{url}: unsupported URL scheme {url.split(':')[0]!r} "
                "(supported: local paths, file://, http(s)://, s3://)")
    for call in (storage.check_scheme, storage.exists, storage.open_stream, storage.is_remote,
                 lambda u: storage.write_bytes_atomic(u, b"x")):
        with pytest.raises(UserError) as info:
            call(url)
        assert str(info.value) == expected


def test_backend_properties_say_what_each_scheme_can_do():
    local, http, s3, pipe = (storage.backend_for(u) for u in ("a/b", "https://h/x", "s3://b/k", "pipe:true"))
    assert storage.backend_for("file:///a") is local
    assert (local.local, local.remote, local.seekable, local.can_write) == (True, False, True, True)
    assert (http.local, http.remote, http.seekable, http.can_write) == (False, True, True, False)
    assert (s3.local, s3.remote, s3.seekable, s3.can_write) == (False, True, True, True)
    assert (pipe.local, pipe.remote, pipe.seekable, pipe.can_write, pipe.runs_command) == (
        False, False, False, False, True)
    assert not any(b.runs_command for b in (local, http, s3))


def test_local_path_only_for_files_on_this_machine(tmp_path):
    assert storage.local_path(str(tmp_path / "a")) == tmp_path / "a"
    assert storage.local_path(f"file://{tmp_path}/a") == tmp_path / "a"
    assert storage.local_path("s3://b/k") is None and storage.local_path("http://h/k") is None


def test_join_and_parent_follow_the_scheme(tmp_path):
    assert storage.join_url(str(tmp_path), "training", "a.tar") == str(tmp_path / "training" / "a.tar")
    assert storage.join_url("s3://b/pre/", "/training/", "a.tar") == "s3://b/pre/training/a.tar"
    assert storage.join_url("file:///x/y", "m.json") == "file:///x/y/m.json"
    assert storage.parent_url("https://h/a/m.json") == "https://h/a"
    assert storage.parent_url(str(tmp_path / "m.json")) == str(tmp_path)


def test_what_a_scheme_cannot_do_is_a_one_line_storage_error_naming_the_url(tmp_path):
    url = "http://127.0.0.1:9/out/manifest.json"
    with pytest.raises(StorageError, match=r"^http://127\.0\.0\.1:9/out/manifest\.json: writing is supported"):
        storage.write_bytes_atomic(url, b"{}")
    with pytest.raises(StorageError, match=r"^http://127\.0\.0\.1:9/out/manifest\.json: upload_file expects"):
        storage.upload_file(tmp_path / "f", url)
    with pytest.raises(StorageError, match=r"^http://127\.0\.0\.1:9/out/manifest\.json: cannot delete"):
        storage.delete(url)
    pipe = f"pipe:touch {tmp_path / 'ran'}"
    for call in (lambda: storage.write_bytes_atomic(pipe, b"x"), lambda: storage.exists(pipe),
                 lambda: storage.object_size(pipe), lambda: storage.delete(pipe)):
        with pytest.raises(StorageError, match="^pipe:touch"):
            call()
    assert not (tmp_path / "ran").exists()   # no refusal runs the command


def test_a_new_scheme_is_one_backend_and_one_registry_line(monkeypatch):
    mem = MemoryBackend()
    monkeypatch.setitem(registry.SCHEMES, "mem", mem)
    url = "mem://bucket/train/manifest.json"
    assert not storage.exists(url)
    storage.write_json(url, {"a": 1})
    text = b'{\n "a": 1\n}\n'
    assert storage.exists(url) and storage.object_size(url) == len(text)
    assert storage.read_bytes(url) == text
    with storage.open_stream(url, 2, 9) as stream:
        assert stream.read() == text[2:9] == b' "a": 1'
    assert storage.join_url(storage.parent_url(url), "x.tar") == "mem://bucket/train/x.tar"
    assert storage.is_remote(url) and storage.local_path(url) is None
    storage.delete(url)
    assert not storage.exists(url)
    with pytest.raises(UserError, match=r"\(supported: local paths, file://, http\(s\)://, s3://, mem://\)"):
        storage.check_scheme("gs://b/x")
