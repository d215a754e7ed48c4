"""Is a port free, does a service answer: TCP and HTTP probes of 127.0.0.1, never through a proxy
(a $http_proxy would answer for a service that is down)."""
from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request

from .config import HOST

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1 never via $http_proxy


def http_ok(url: str, timeout: float = 2.0, any_status: bool = False, headers: dict | None = None) -> bool:
    try:
        with _NO_PROXY.open(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return 200 <= r.status < 300
    except urllib.error.HTTPError as e:  # the server answered
        return any_status and e.code < 500
    except (OSError, ValueError):
        return False


def tcp_ok(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    with socket.socket() as s:
        if sys.platform != "win32":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "in use"
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return not tcp_ok(port, 0.3)  # something listening on another address of the port


def free_port(taken: set[int]) -> int:
    while True:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
