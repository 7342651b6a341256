"""Network addresses as users type them ("host:port", "[::1]:18000"), parsed in one place.

Also the check that a port is free before anything binds it, so a busy port is one clear line
naming the option that moves it, not a gRPC "Failed to bind" traceback or a server silently
sharing the port (gRPC binds with SO_REUSEPORT, so a second control plane would not fail at all).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass


class UsageError(Exception):
    """A mistake of the user's (a busy port, a malformed address): shown as one line, exit 1."""


@dataclass(frozen=True)
class Address:
    host: str  # a name, an IPv4 address or an IPv6 address without brackets
    port: int

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        """The form gRPC, Envoy's docs and users write: host:port, IPv6 in brackets."""
        return f"[{self.host}]:{self.port}" if self.is_ipv6 else f"{self.host}:{self.port}"


def parse_port(text: str | int, *, allow_zero: bool = False) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"port {text!r} is not a number") from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} is out of range ({low}-65535)")
    return port


def parse_host(text: str) -> str:
    """A host name or IP address; IPv6 with or without brackets, returned without them."""
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if not host:
        raise ValueError("no host given")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r} is not a valid IPv6 address") from None
        return host
    if any(c.isspace() or c in "[]/@#" for c in host):
        raise ValueError(f"{text!r} is not a host name or IP address")
    return host


def parse_address(text: str, *, allow_zero_port: bool = True, default_host: str | None = None) -> Address:
    """ "host:port" or "[ipv6]:port" -> Address; a ValueError that says what is wrong otherwise.

    `default_host` is what ":port" means (a server's "every interface"); without it a host is required.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1:]
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: no port (write [{host}]:PORT)")
        port_text = rest[1:]
    else:
        if text.count(":") > 1:
            raise ValueError(f"{text!r}: put an IPv6 address in brackets, as in [::1]:18000")
        host, sep, port_text = text.rpartition(":")
        if not sep and text.isdigit():
            raise ValueError(f"{text!r} is a port alone: write HOST:{text}")
        if not sep:
            raise ValueError(f"{text!r}: no port (write {text or 'HOST'}:PORT)")
    if not port_text:
        raise ValueError(f"{text!r}: no port after ':'")
    if not host and default_host is not None:
        host = default_host
    return Address(parse_host(host), parse_port(port_text, allow_zero=allow_zero_port))


def check_free(address: Address | str, what: str) -> None:
    """Raises UsageError if something already listens on `address` (port 0 is always free).

    `what` says which option moves it, e.g. "the ADS port; choose another with --xds-address".
    Binds the way the servers do (SO_REUSEADDR, so a port in TIME_WAIT counts as free), but
    without SO_REUSEPORT, so a port another process listens on counts as taken, whatever that
    process set.
    """
    if isinstance(address, str):
        address = parse_address(address, default_host="0.0.0.0")
    if address.port == 0:
        return
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot use {address} ({what}): {exc.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror}"
                raise UsageError(f"port {address.port} on {address.host} {reason} ({what})") from None
