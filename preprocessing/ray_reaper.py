"""Stops an embedded Ray cluster whose driver died without ``ray.shutdown()`` (e.g. SIGKILL).

``ray.init()`` starts gcs_server, raylet, agents and a log monitor; when the driver is killed, gcs and raylet
follow it but some helpers (dashboard/runtime-env agents, log monitor) can linger, and ``ray stop`` would stop
every Ray cluster of the user on the machine. This watchdog, started by the driver next to its cluster, waits for
the driver to exit and then kills exactly the processes whose command line names the cluster's temp dir (by pid),
those whose environment carries the driver's owner tag (``VEXPRESS_RAY_OWNER``, inherited by every process the
cluster starts), and those holding files open in the temp dir (Ray's agents rewrite their title, which zeroes
both their command line and their environment block), and removes the temp dir.

    python -m preprocessing.ray_reaper <driver pid> <ray temp dir>
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

OWNER_ENV = "VEXPRESS_RAY_OWNER"  # set by the driver before ray.init: every Ray process inherits it


def owner_tag(driver_pid: int, temp_dir: str) -> str:
    return f"{driver_pid}:{temp_dir}"


def cluster_processes(temp_dir: str, tag: str | None = None) -> list[psutil.Process]:
    """Processes of the Ray cluster in ``temp_dir``: their arguments name its session dir, their environment
    carries the driver's ``tag``, or they hold files open in it (the agents' logs: ``ray::DashboardAgent`` and
    ``ray::RuntimeEnvAgent`` rewrite their title with setproctitle, which zeroes the whole environment block)."""
    me = os.getpid()
    needle = temp_dir.rstrip("/") + "/"  # "/tmp/vexray-12/" must not match "/tmp/vexray-123/..."
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["pid"] == me:
                continue
            if (any(needle in arg for arg in p.info["cmdline"] or []) or (tag is not None and _has_tag(p, tag))
                    or _holds_files_in(p, needle)):
                found.append(p)
        except (psutil.Error, TypeError):
            continue
    return found


def _holds_files_in(p: psutil.Process, needle: str) -> bool:
    try:
        return any(f.path.startswith(needle) for f in p.open_files())
    except psutil.Error:  # gone, or another user's process
        return False


def _has_tag(p: psutil.Process, tag: str) -> bool:
    """Look for ``OWNER_ENV=tag`` in the raw environment block: setproctitle (Ray's agents) zeroes the start of
    that block, which makes parsers such as ``psutil.Process.environ`` see an empty environment."""
    entry = f"{OWNER_ENV}={tag}".encode()
    try:
        with open(f"/proc/{p.pid}/environ", "rb") as f:
            return entry + b"\0" in f.read() + b"\0"
    except OSError:  # not Linux, or the process is gone
        try:
            return p.environ().get(OWNER_ENV) == tag
        except psutil.Error:
            return False


def reap(temp_dir: str, tag: str | None = None, grace_s: float = 3.0, rounds: int = 5) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, the cluster's processes, scanning again until a scan finds none
    (at most ``rounds`` scans): a helper the raylet was spawning while the first scan ran (a dashboard agent, say)
    only shows up in a later one. Removes the temp dir; returns the pids stopped."""
    stopped: list[int] = []
    for _ in range(rounds):
        procs = cluster_processes(temp_dir, tag)
        if not procs:
            break
        _stop(procs, grace_s)
        stopped += [p.pid for p in procs]
        time.sleep(0.5)
    shutil.rmtree(temp_dir, ignore_errors=True)
    return stopped


def _stop(procs: list[psutil.Process], grace_s: float) -> None:
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def start_reaper(driver_pid: int, temp_dir: str) -> subprocess.Popen:
    """Launch the watchdog in its own session so that a signal to the driver's group does not reach it."""
    return subprocess.Popen([sys.executable, "-m", "preprocessing.ray_reaper", str(driver_pid), temp_dir],
                            cwd=str(Path(__file__).resolve().parent.parent), start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    driver_pid, temp_dir = int(argv[0]), argv[1]
    while True:
        try:
            if psutil.Process(driver_pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(0.5)
    reap(temp_dir, owner_tag(driver_pid, temp_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
