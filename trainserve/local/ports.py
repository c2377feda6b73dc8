"""Free ports for the local cloud's servers, chosen below the operating system's ephemeral port range.

A port found free now is bound a moment later by the server that needs it. A port from the ephemeral range
(Linux: 32768-60999) can be taken in between as the source port of any outgoing connection on the machine,
and the server then fails with "Address already in use" (seen in CI, while another test's local cloud made
thousands of connections). Ports below that range are never handed out for outgoing connections.
"""

from __future__ import annotations

import random
import socket

EPHEMERAL_DEFAULT = (32768, 60999)
LOWEST = 20000


def ephemeral_range() -> tuple[int, int]:
    """The range the OS picks outgoing connections' source ports from."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT


def port_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (connections of a previous run still in TIME_WAIT do
    not count: the servers set SO_REUSEADDR too)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1, attempts: int = 500) -> int:
    """The first of ``count`` consecutive free ports, below the ephemeral range when there is room there
    (else any free port the OS gives)."""
    high = min(ephemeral_range()[0], 65536) - count
    for _ in range(attempts if high > LOWEST else 0):
        base = random.randint(LOWEST, high)
        if all(port_free(base + i) for i in range(count)):
            return base
    for _ in range(attempts):  # no room below the range: what the OS gives
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count <= 65536 and all(port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free port(s) on 127.0.0.1")
