"""pipe:cmd: the stdout of a shell command, read from its start; only with allow_pipe=True (a manifest
must never run a command).  It cannot seek, has no size and cannot be written."""
from __future__ import annotations

import subprocess

from fmashard.errors import StorageError
from fmashard.storage.base import Backend

PIPE_REFUSAL = ("pipe: URLs run a shell command; they are accepted only from Python, with allow_pipe=True "
                "(fmashard.data.loader.LoaderConfig, fmashard.data.sources.resolve_source)")


class PipeBackend(Backend):
    remote = False
    seekable = False
    runs_command = True

    def open(self, url, start, end, version=None):
        if start:   # refused before the command runs
            raise StorageError(url, "pipe: sources cannot start mid-stream")
        proc = subprocess.Popen(url[len("pipe:"):], shell=True, stdout=subprocess.PIPE)  # noqa: S602
        return proc.stdout, None

    def size(self, url):
        raise StorageError(url, PIPE_REFUSAL)   # as a stream opened without allow_pipe: never runs it

    def write_atomic(self, url, data):
        raise StorageError(url, "a pipe: URL cannot be written")

    def delete(self, url):
        raise StorageError(url, "a pipe: URL cannot be deleted")
