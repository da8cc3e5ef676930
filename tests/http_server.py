"""A local http.server on 127.0.0.1 that serves a folder with Range support, and can cut connections
mid-body to test the loader's retry-and-resume path."""
from __future__ import annotations

import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class RangeHandler(SimpleHTTPRequestHandler):
    faults: dict = {}        # path -> list of byte counts after which to drop the connection (one per request)
    requests: list = []      # (path, range header) of every GET

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server naming
        path = self.translate_path(self.path)
        self.requests.append((self.path, self.headers.get("Range")))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else size - 1
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        drops = self.faults.get(self.path)
        cut = drops.pop(0) if drops else None
        with open(path, "rb") as f:
            f.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = f.read(min(1 << 16, remaining))
                if cut is not None and len(chunk) >= cut:
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-body
                    return
                if cut is not None:
                    cut -= len(chunk)
                self.wfile.write(chunk)
                remaining -= len(chunk)


class FolderServer:
    """`with FolderServer(root) as url:` serves `root` at `url` until the block ends."""

    def __init__(self, root):
        handler = type("Handler", (RangeHandler,), {"faults": {}, "requests": []})
        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        host, port = self.server.server_address
        return f"http://{host}:{port}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
