"""A small threaded TCP proxy on 127.0.0.1 that adds latency to every HTTP response.

Each client connection gets its own upstream connection and two pump threads.  Whenever bytes arrive
from the client (a request, or part of one), the next bytes that come back from the upstream server
are held for `delay` seconds before they are forwarded: the first byte of every response (also on
keep-alive connections, one per request) arrives `delay` later, as from a server `delay` away; the rest
of the body streams at full speed.  That is what separates one-GET-per-track from streaming a shard.
`rate` (bytes/s, optional) also caps all responses together at a link's speed: each chunk (up to 1 MB)
is sent once the shared link has carried the ones before it, so the bytes a loader moves, not only its
round trips, set its speed.

    with LatencyProxy(("127.0.0.1", 8333), delay=0.030) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, ...)

    python benchmarks/latency_proxy.py --upstream 127.0.0.1:8333 --delay-ms 30 [--link-mbit 1000]   # own process
"""
from __future__ import annotations

import argparse
import fcntl
import os
import socket
import threading
import time

CHUNK = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class LatencyProxy:
    def __init__(self, upstream: tuple[str, int], delay: float = 0.030, host: str = "127.0.0.1", port: int = 0,
                 rate: float | None = None):
        self.upstream, self.delay, self.rate = upstream, delay, rate
        self._link_free = 0.0        # when the capped link has sent everything queued so far
        self.listener = socket.create_server((host, port))
        self.address = self.listener.getsockname()
        self.responses = 0           # responses delayed so far
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, name="latency-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    def start(self) -> LatencyProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        with self._lock:
            for sock in list(self._sockets):
                _shutdown(sock)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()   # upstream down: the client sees a closed connection, as without the proxy
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets |= {client, upstream}
            request_sent = threading.Event()
            threading.Thread(target=self._pump, args=(client, upstream, request_sent, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, request_sent, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request_sent: threading.Event, response: bool):
        """Forward src -> dst until src closes.  On Linux the bytes go socket -> pipe -> socket with
        splice(2), never through Python (the proxy should add latency, not CPU load)."""
        move = _spliced if hasattr(os, "splice") else _copied
        try:
            for n in move(src, dst):   # yields the bytes that have arrived, before they are sent
                if response and self.rate:
                    self._pace(n)
                if response:
                    if request_sent.is_set():   # first bytes of a response: hold them
                        request_sent.clear()
                        time.sleep(self.delay)
                        with self._lock:
                            self.responses += 1
                else:
                    request_sent.set()
        except OSError:
            pass
        finally:
            _shutdown(dst)
            _shutdown(src)
            with self._lock:
                self._sockets.discard(src)


    def _pace(self, n: int) -> None:
        """Hold `n` response bytes until the shared link, at `rate` bytes/s, has sent what was queued before."""
        with self._lock:
            now = time.perf_counter()
            start = max(now, self._link_free)
            self._link_free = start + n / self.rate
        if start > now:
            time.sleep(start - now)


def _copied(src: socket.socket, dst: socket.socket):
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := src.recv_into(buf):
        yield n
        dst.sendall(view[:n])


def _spliced(src: socket.socket, dst: socket.socket):
    read_end, write_end = os.pipe()
    try:
        try:
            fcntl.fcntl(write_end, F_SETPIPE_SZ, CHUNK)
        except OSError:
            pass   # a smaller pipe still works
        while n := os.splice(src.fileno(), write_end, CHUNK):
            yield n
            while n:
                n -= os.splice(read_end, dst.fileno(), n)
    finally:
        os.close(read_end)
        os.close(write_end)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def main() -> None:
    """Standalone (a process of its own, so its pump threads do not share the client's GIL): prints its
    URL on the first line; on SIGTERM/SIGINT prints `responses delayed: N` and exits."""
    import signal

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="host:port of the server, e.g. 127.0.0.1:8333")
    parser.add_argument("--delay-ms", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--link-mbit", type=float, default=0.0,
                        help="cap all responses together at this many Mbit/s (0: no cap)")
    args = parser.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rate = args.link_mbit * 1e6 / 8 if args.link_mbit > 0 else None
    with LatencyProxy((host, int(port)), args.delay_ms / 1000, port=args.port, rate=rate) as proxy:
        print(proxy.url, flush=True)
        while not stop.wait(0.2):
            pass
        print(f"responses delayed: {proxy.responses}", flush=True)


if __name__ == "__main__":
    main()
