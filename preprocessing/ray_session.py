"""The Ray session of a preprocessing job: joining a cluster or starting an embedded one on loopback, and telling
infrastructure failures (a node or worker lost) from bad input."""

from __future__ import annotations

import os
import re
from pathlib import Path

from preprocessing.config import PreprocessConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


def is_infra_error(exc: BaseException) -> bool:
    """True for failures of the machinery (OOM kill, dead worker/actor/node, lost object) rather than of the
    input: such a video is retried and never recorded as rejected, so no good clip is lost."""
    from ray import exceptions as E

    names = ("OutOfMemoryError", "WorkerCrashedError", "ObjectLostError", "RayActorError", "NodeDiedError",
             "ObjectStoreFullError", "LocalRayletDiedError", "OwnerDiedError", "TaskUnschedulableError",
             "ActorUnschedulableError", "RaySystemError", "ObjectFetchTimedOutError")
    kinds = tuple(getattr(E, n) for n in names if hasattr(E, n))
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, kinds):
            return True
        exc = getattr(exc, "cause", None) if isinstance(exc, E.RayTaskError) else None
        seen += 1
    return False


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def describe_error(exc: BaseException, limit: int = 500) -> str:
    """One plain-text line for an exception raised in a task: the root cause (type and message, not Ray's
    wrapper, no ANSI colour codes) and where it was raised."""
    from ray import exceptions as E

    where = ""
    for _ in range(10):  # a task whose input came from a failed task nests one RayTaskError per hop
        if not isinstance(exc, E.RayTaskError) or getattr(exc, "cause", None) is None or exc.cause is exc:
            break
        frames = _FRAME.findall(_ANSI.sub("", str(exc)))
        if frames:
            path, line, func = frames[-1]
            where = f" (at {'/'.join(Path(path).parts[-2:])}:{line} in {func})"
        exc = exc.cause
    text = " ".join(_ANSI.sub("", str(exc)).split())
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return message[:limit - len(where)] + where


class InfraFailure(RuntimeError):
    """Some videos failed for infrastructure reasons after all retries; rerunning resumes them."""


def present_auth_token() -> None:
    """Make a driver joining a cluster present the cluster's token (Ray 2.60 token auth), when one is available
    (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``) and ``RAY_AUTH_MODE`` is unset.

    Ray reads ``RAY_AUTH_MODE`` into its native config when it is imported, and enables the token by itself only
    for ``address="auto"``: setting the variable later did nothing, and ``--address host:port`` was refused with
    InvalidAuthToken. This is what Ray does for "auto": set the mode and reload the config.
    """
    if "RAY_AUTH_MODE" in os.environ:  # the user's choice, already read by Ray
        return
    from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def init_ray(cfg: PreprocessConfig, address: str | None) -> str | None:
    """Join ``address`` (``auto`` under ``ray submit``) or start an embedded single-node Ray on 127.0.0.1.

    Returns the embedded cluster's temp dir (so the caller can stop exactly that cluster) or None.
    """
    import ray

    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        present_auth_token()
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
                 log_to_driver=True)
        return None
    # Loopback only: ray.init(_node_ip_address="127.0.0.1") alone is re-resolved to the machine's address and
    # gcs/raylet/agents then listen on all interfaces. Ray's "local-only" mode (the one it uses on macOS and
    # Windows) makes every process bind 127.0.0.1; it is read from the environment (children) and a module
    # constant (this process).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    temp = cfg.ray_temp_dir or f"/tmp/vexray-{os.getpid()}"
    # A head killed without `ray stop` leaves this file behind and the next ray.init would trip over it;
    # an embedded run always starts its own head, so it is stale by definition.
    Path(temp, "ray_current_cluster").unlink(missing_ok=True)
    # Ray's memory monitor kills *Ray* workers when *machine* memory passes 95 %. On a shared workstation that
    # memory is mostly other programs', and killing our small workers frees nothing useful: the embedded
    # cluster leaves out-of-memory handling to the kernel unless the user sets these variables.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    from preprocessing.ray_reaper import OWNER_ENV, owner_tag, start_reaper

    os.environ[OWNER_ENV] = owner_tag(os.getpid(), temp)  # lets the reaper find every process of this cluster
    ray.init(num_cpus=cfg.num_workers, num_gpus=1 if cfg.use_gpu else 0, include_dashboard=False,
             _temp_dir=temp, _node_ip_address="127.0.0.1", log_to_driver=True, configure_logging=False)

    start_reaper(os.getpid(), temp)  # stops this cluster if the driver dies without ray.shutdown()
    return temp
