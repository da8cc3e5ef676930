"""Who runs the shard tasks (shard_tools.shard_task): `ENGINES[name](tasks, config, out, advance)` is a context
manager yielding an iterator of `(task, record)` as tasks finish (in any order); leaving it early (Ctrl-C, an
error) cancels the outstanding tasks.  `advance()` is called once per track as tasks report them.

    local  this machine: with 1 worker, in this process; else a forkserver process pool.  With at least
           SHARDS_PER_WORKER shards per worker, one pool task per shard (decoded audio stays in the worker);
           with fewer, the pool decodes tracks and this process writes the shards, so a build of few
           shards still uses every worker.
    ray    one remote task per shard on a Ray cluster (`ray.init(address=config.ray_address)`, or a local
           Ray started for the run), retried when its worker dies, at most 2 per CPU in flight.  Every
           task carries this process's AWS_* and FMASHARD_* variables (`runtime_env` env_vars): workers
           on other machines reach the same s3:// output with the same credentials, endpoint and retry
           policy.  No message shows their values.

Every engine runs the same `build_shard`, so the output bytes do not depend on the engine.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager

from fmashard.errors import UserError
from shard_tools.audio import process_track
from shard_tools.shard_task import ShardTask, build_shard

# forkserver: workers are forked from a clean server process (no inherited torch/CUDA/thread state) that
# has imported the shard task once; measured 0.25-0.35 s faster per build than spawn with 2 workers.
MP_START_METHOD = "forkserver"
# below this many shards per worker the last round of shard tasks leaves workers idle: 5 shards on 2 workers
# measured 16 % slower than the track pool (benchmarks/README.md "Engines and clusters")
SHARDS_PER_WORKER = 8
RAY_MAX_RETRIES = 3
RAY_INSTALL = "--engine ray needs Ray: pip install 'fmashard[ray]'"
FORWARDED_ENV = ("AWS_", "FMASHARD_")   # what a shard task needs of the driver's environment to reach OUT
_SECRET_NAMES = ("SECRET", "TOKEN", "ACCESS_KEY", "PASSWORD")


def _pool(workers: int):
    context = multiprocessing.get_context(MP_START_METHOD)
    if MP_START_METHOD == "forkserver":
        context.set_forkserver_preload(["shard_tools.shard_task"])
    return context.Pool(workers, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))


def _throttled(items, permits: threading.Semaphore, stop: threading.Event):
    for item in items:
        while not permits.acquire(timeout=0.1):
            if stop.is_set():
                return
        yield item


def _advanced(task: ShardTask, advance) -> None:
    for _ in task.plan.tracks:
        advance()


# ---------------------------------------------------------------------------- local
@contextmanager
def local_engine(tasks: list[ShardTask], config, out, advance):
    workers = min(config.workers, sum(len(t.plan.tracks) for t in tasks))
    if workers <= 1:
        yield ((task, build_shard(task, out=out, advance=advance)) for task in tasks)
    elif len(tasks) >= SHARDS_PER_WORKER * workers:
        with _shard_pool(tasks, min(workers, len(tasks)), advance) as done:
            yield done
    else:
        with _track_pool([t for task in tasks for t in task.track_tasks()], workers) as results:
            yield ((task, build_shard(task, results, out, advance)) for task in tasks)


@contextmanager
def _shard_pool(tasks: list[ShardTask], workers: int, advance):
    """One pool task per shard, at most 2 per worker in flight; records in the order shards finish."""
    permits, stop, pool = threading.Semaphore(2 * workers), threading.Event(), _pool(workers)

    def finished():
        for task, record in pool.imap_unordered(_run_shard, _throttled(tasks, permits, stop)):
            permits.release()
            _advanced(task, advance)
            yield task, record

    with _stopping(pool, stop):
        yield finished()


def _run_shard(task: ShardTask):
    return task, build_shard(task)


@contextmanager
def _track_pool(track_tasks: list, workers: int):
    """`TrackResult`s in task order from a pool; at most 4 results per worker wait in memory."""
    permits, stop, pool = threading.Semaphore(4 * workers), threading.Event(), _pool(workers)

    def released(results):
        for result in results:
            permits.release()
            yield result

    with _stopping(pool, stop):
        yield released(pool.imap(process_track, _throttled(track_tasks, permits, stop)))


@contextmanager
def _stopping(pool, stop: threading.Event):
    """On leaving (done, an error, Ctrl-C): stop feeding the pool, then end its processes."""
    try:
        yield
    finally:
        stop.set()
        pool.terminate()
        pool.join()


# ---------------------------------------------------------------------------- ray
@contextmanager
def ray_engine(tasks: list[ShardTask], config, out, advance):
    try:
        import ray
    except ImportError:
        raise UserError(RAY_INSTALL) from None
    saved_handlers = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    started, env = _connect_ray(ray, config), forwarded_env()
    remote = ray.remote(max_retries=RAY_MAX_RETRIES, retry_exceptions=False)(build_shard)
    if env:
        remote = remote.options(runtime_env={"env_vars": env})
    pending: dict = {}

    def finished():
        queue = list(tasks)
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        while queue or pending:
            while queue and len(pending) < limit:
                task = queue.pop(0)
                pending[remote.remote(task)] = task
            [ref], _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            yield task, _ray_result(ray, ref, task, env)
            _advanced(task, advance)

    try:
        yield finished()
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
            for signum, handler in saved_handlers.items():   # ray.init installs its own SIGTERM handler
                signal.signal(signum, handler)


def _connect_ray(ray, config) -> bool:
    """Connect to `config.ray_address`, or start a local Ray with `config.workers` CPUs; True if this run
    started (and so must stop) it.  An already initialised Ray (a notebook, a test) is used as it is."""
    if ray.is_initialized():
        return False
    try:
        if config.ray_address:   # WARNING: Ray's INFO lines ("Connected to Ray cluster") stay off stderr
            ray.init(address=config.ray_address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=config.workers, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = config.ray_address or "a local Ray"
        raise UserError(f"--engine ray: cannot connect to {where} ({exc})".replace("\n", " ")) from None
    return True


def forwarded_env() -> dict[str, str]:
    """This process's AWS_* and FMASHARD_* variables: the S3 credentials, endpoint and region, the retry policy."""
    return {name: value for name, value in os.environ.items() if name.startswith(FORWARDED_ENV)}


def scrubbed(text: str, env: dict[str, str]) -> str:
    """`text` without the value of any credential in `env` (a Ray error may quote a task's runtime_env)."""
    for name, value in env.items():
        if value and any(part in name for part in _SECRET_NAMES):
            text = text.replace(value, "***")
    return text


def _ray_result(ray, ref, task: ShardTask, env: dict[str, str]) -> dict:
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else exc
        if isinstance(cause, UserError):
            raise UserError(scrubbed(str(cause), env)) from None
        raise UserError(scrubbed(f"{task.config.out}: shard {task.name} failed on Ray "
                                 f"({type(cause).__name__}: {cause})".replace("\n", " "), env)) from None
    except RayError as exc:   # the worker died on every retry, the node is gone...
        raise UserError(scrubbed(f"{task.config.out}: shard {task.name} failed on Ray after {RAY_MAX_RETRIES} "
                                 f"retries ({type(exc).__name__}: {exc})".splitlines()[0], env)) from None


ENGINES = {"local": local_engine, "ray": ray_engine}
