"""A Ray cluster address, checked before anything heavy loads: ``local`` or ``host:port``
(``ray://`` allowed), and whether a cluster answers there. Kept apart from
:mod:`medcf.onray.cluster` so that the command line can refuse a bad ``--ray`` in one line
without importing the editor."""

from __future__ import annotations

import socket

from medcf.errors import InputError

LOCAL = "local"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` of a cluster address (``ray://`` prefix allowed), or one line why not."""
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--ray {address}: give 'local' or a cluster address host:port (or ray://host:port)")
    return host.strip("[]"), int(port)


def _reachable(host: str, port: int, address: str) -> None:
    """Ray itself retries an unreachable address for minutes; a refused port is one line now."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        raise InputError(f"--ray {address}: no Ray cluster answers there ({error.strerror or error}); start one "
                         "with `ray start --head` or use --ray local") from None


def check_address(address: str) -> str:
    """The host of a cluster address that answers; one line if it is malformed or silent."""
    host, port = _host_port(address)
    _reachable(host, port, address)
    return host
