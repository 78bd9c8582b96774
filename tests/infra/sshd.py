"""A test-owned OpenSSH server on 127.0.0.1 standing in for the cluster's hosts (``ray up`` with the local
provider, ``deepspeed --hostfile`` with pdsh).

Everything it uses lives in one folder: host key, client key, ``authorized_keys``, ``sshd_config``, a home for
the remote sessions (``SetEnv HOME=...``, so nothing is written to the real home) and ``bin/ssh``, a wrapper that
adds ``-F <folder>/ssh_config`` (port, key, known-hosts file) to every ssh call made with that folder first on
PATH: the stand-in for the ``~/.ssh/config`` entries a real cluster's users write, which a test must not edit.

With root, sshd runs as PID 1 of its own PID namespace (``unshare --pid --mount-proc``): what runs over ssh
sees only the processes of that "host", so the ``ray stop`` that ``ray up`` / ``ray down`` run there cannot
reach other Ray clusters of this machine, and stopping sshd ends every process left in it, like a host going
down. Without PID namespaces the server runs as a plain process (``isolated`` is False).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra.net import free_port

SSHD = "/usr/sbin/sshd"
HOSTS = ("127.0.0.1", "localhost")


def missing_tools() -> list[str]:
    tools = {"sshd": SSHD, "ssh": shutil.which("ssh"), "ssh-keygen": shutil.which("ssh-keygen"),
             "rsync": shutil.which("rsync"), "pdsh": shutil.which("pdsh")}
    return [name for name, path in tools.items() if not path or not os.access(path, os.X_OK)]


def pid_namespaces_available() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    proc: subprocess.Popen
    isolated: bool

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def home(self) -> Path:
        """HOME of every session on the server (the remote hosts' home)."""
        return self.root / "home"

    @property
    def bin(self) -> Path:
        """Put first on PATH: its ``ssh`` reads this server's client config."""
        return self.root / "bin"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client command (ray up, deepspeed): PATH with the ssh wrapper first."""
        return {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", **extra}

    def ssh(self, host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "ssh"), host, command], capture_output=True, text=True,
                              timeout=timeout)

    def processes(self) -> list[int]:
        """PIDs (in this machine's namespace) of everything running on the server, sshd excluded."""
        import psutil

        try:
            sshd = psutil.Process(self.proc.pid)
            if self.isolated:  # unshare -> sshd (the namespace's PID 1) -> sessions and what they left running
                sshd = sshd.children()[0]
            return [p.pid for p in sshd.children(recursive=True)]
        except (psutil.Error, IndexError):
            return []

    def stop(self) -> None:
        """Stop sshd; in its own PID namespace this ends every process still running there."""
        import psutil

        if self.proc.poll() is not None:
            return
        # unshare ignores SIGTERM while it waits: signal sshd itself (the namespace's PID 1).
        try:
            target = psutil.Process(self.proc.pid).children()[0] if self.isolated else psutil.Process(self.proc.pid)
            target.send_signal(signal.SIGTERM)
        except (psutil.Error, IndexError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            for p in psutil.Process(self.proc.pid).children():
                p.kill()
            self.proc.kill()
            self.proc.wait()


def _write_config(root: Path, port: int, user: str) -> None:
    (root / "home").mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vexpress-test", "-f",
                        str(root / name)], check=True)
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    (root / "sshd_config").write_text("\n".join([
        f"ListenAddress 127.0.0.1:{port}",
        f"HostKey {root / 'host_key'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}",
        f"AllowUsers {user}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "PrintMotd no",
        "PrintLastLog no",
        "AllowTcpForwarding yes",
        f"PidFile {root / 'sshd.pid'}",
        f"SetEnv HOME={root / 'home'}",
        "LogLevel ERROR",
        "",
    ]))
    (root / "ssh_config").write_text("\n".join([
        f"Host {' '.join(HOSTS)}",
        "  HostName 127.0.0.1",
        f"  Port {port}",
        f"  User {user}",
        f"  IdentityFile {root / 'id_ed25519'}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {root / 'known_hosts'}",
        "  StrictHostKeyChecking accept-new",
        "  BatchMode yes",
        "  LogLevel ERROR",
        "",
    ]))
    (root / "bin").mkdir(exist_ok=True)
    wrapper = root / "bin" / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {root / "ssh_config"} "$@"\n')
    wrapper.chmod(0o755)


def start_sshd(root: Path, timeout: float = 20.0) -> SshServer:
    """Start sshd on 127.0.0.1:<free port> with everything under ``root`` (keep the path short)."""
    import getpass

    root.mkdir(parents=True, exist_ok=True)
    user, port = getpass.getuser(), free_port()
    _write_config(root, port, user)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir (Debian)
    isolated = pid_namespaces_available()
    cmd = [SSHD, "-D", "-e", "-f", str(root / "sshd_config")]
    if isolated:
        cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", *cmd]
    log = open(root / "sshd.log", "w")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    server = SshServer(root, port, user, proc, isolated)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {(root / 'sshd.log').read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        server.stop()
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout} s")
    check = server.ssh("127.0.0.1", "echo ok")
    if check.stdout.strip() != "ok":
        server.stop()
        raise RuntimeError(f"ssh to the test sshd failed: {check.stderr[-2000:]}")
    return server
