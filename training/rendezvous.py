"""Process-group rendezvous that stays on loopback when the master address is a loopback address.

torch's ``env://`` rendezvous starts rank 0's TCPStore listening on every interface (``*:<MASTER_PORT>``) whatever
``MASTER_ADDR`` says, and gloo binds the address the machine's hostname resolves to: a one-machine run
(``--master_addr 127.0.0.1``, the default of ``deepspeed --num_gpus N`` and of a plain ``python training/run.py``)
would accept connections from the network. Here rank 0 binds the store's socket to the loopback address itself
and hands it to the TCPStore (``master_listen_fd``), and gloo (NCCL) is pointed at the loopback interface
(``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME``, unless set) before the process group is created from that
store. With a real master address nothing changes: :func:`init_loopback_process_group` returns False and
``env://`` runs as before (the store must then be reachable from the other nodes).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from datetime import timedelta

import torch


def loopback_ip(host: str) -> str | None:
    """The loopback IP ``host`` names (``127.0.0.1``, ``localhost``, ``::1``, any 127/8 address), else None."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None


def loopback_interface(default: str = "lo") -> str:
    """Name of the network interface that carries 127.0.0.1 (``lo`` on Linux)."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addrs):
            return name
    return default


def init_loopback_process_group(backend: str | None = None, timeout: timedelta | None = None) -> bool:
    """Create the default process group over a TCPStore listening on ``MASTER_ADDR`` only, when that is a
    loopback address. Returns False (doing nothing) for any other address, or under torchrun, whose agent hosts
    the store. ``backend`` and ``timeout`` default to what ``deepspeed.init_distributed`` would use."""
    ip = loopback_ip(os.environ.get("MASTER_ADDR", ""))
    if ip is None or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return False
    if backend is None:
        from deepspeed.accelerator import get_accelerator

        backend = get_accelerator().communication_backend_name()
    if timeout is None:
        from deepspeed.constants import default_pg_timeout as timeout
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    port = int(os.environ["MASTER_PORT"])
    # gloo's pair sockets and NCCL's bootstrap sockets on the loopback interface too (unless set by the user);
    # every rank of a loopback master runs on this machine
    interface = {"gloo": "GLOO_SOCKET_IFNAME", "nccl": "NCCL_SOCKET_IFNAME"}.get(backend)
    if interface:
        os.environ.setdefault(interface, loopback_interface())
    listen_fd = None
    if rank == 0:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        listen_fd = socket.create_server((ip, port), family=family, backlog=max(128, world_size)).detach()
    store = torch.distributed.TCPStore(ip, port, world_size, is_master=rank == 0, timeout=timeout,
                                       multi_tenant=True, master_listen_fd=listen_fd)
    torch.distributed.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    return True
