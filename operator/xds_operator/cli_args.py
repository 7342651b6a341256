"""Types of the command-line options: each value checked when it is parsed, so a mistake is
argparse's one usage line naming the option, not a traceback or a config Envoy refuses later."""

from __future__ import annotations

import argparse
import ipaddress
import math
from typing import Callable, TypeVar

from .addresses import Address, parse_address, parse_host, parse_port

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

T = TypeVar("T")


def _from_value_error(parse: Callable[[str], T], what: str) -> Callable[[str], T]:
    """An argparse type from a parser that raises ValueError: its message becomes the usage line."""
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = what  # argparse names the type in "invalid <name> value"
    return convert


def _server_address(text: str) -> str:
    return str(parse_address(text, default_host="0.0.0.0"))  # ":18000" is every interface, as in Go


def _client_address(text: str) -> Address:
    return parse_address(text, allow_zero_port=False)


def _ip_address(text: str) -> str:
    return str(ipaddress.ip_address(text))


server_address = _from_value_error(_server_address, "address")
client_address = _from_value_error(_client_address, "address")
port_number = _from_value_error(parse_port, "port")
host_name = _from_value_error(parse_host, "host")
listener_ip = _from_value_error(_ip_address, "IP address")  # Envoy's listeners resolve no names: NACK


def _listener_port(text: str) -> int:
    from .api.route_spec import MIN_LISTENER_PORT  # here: the other commands need not import the API

    port = parse_port(text)
    if port < MIN_LISTENER_PORT:  # the demo's Route would be refused, and Envoy would never listen
        raise ValueError(f"port {port} is below {MIN_LISTENER_PORT}, the lowest a Route's listener may use")
    return port


listener_port = _from_value_error(_listener_port, "port")


def node_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty (Envoy refuses ADS without a node id and cluster)")
    return text


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (seconds > 0 and math.isfinite(seconds)):  # 0 would poll in a busy loop
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0")
    return seconds


def log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.upper()
