"""What an ADS stream tells the rest of the program (after go-control-plane's server `Callbacks`).

The protocol state machines (sotw.py, delta.py) and the gRPC server (server.py) report events
here and know nothing of who listens: the proxy registry (proxies.py) is one implementation,
the state machines' unit tests record the calls with another. The mappings passed are valid
for the duration of the call (they may be views of the stream's state): copy what you keep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StreamInfo:
    """One ADS stream: the Envoy node on it and the protocol it speaks."""
    stream_id: int
    node_id: str
    group: str  # Envoy node.cluster
    protocol: str  # "sotw" or "delta"


class StreamCallbacks(Protocol):
    def on_stream_open(self, stream: StreamInfo) -> None:
        """The stream's first request arrived (it names the node)."""

    def on_stream_closed(self, stream: StreamInfo) -> None:
        """The stream ended, for whatever reason."""

    def on_request(self, stream: StreamInfo, type_url: str) -> None:
        """A request of `type_url` arrived (before it is acted on)."""

    def on_response(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
                    removed: Sequence[str]) -> None:
        """A response is sent: `resources` (name -> version) and, in delta, `removed` names."""

    def on_ack(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
               removed: Sequence[str], state: Mapping[str, str] | None) -> None:
        """The client ACKed the response that carried `resources` (name -> version) and, in
        delta, `removed`; or a reconnecting client runs them. In SotW, `state` is everything
        it now runs of the type (None in delta, where the changes add up); it never changes,
        so it may be kept without a copy."""

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, message: str,
                resources: Mapping[str, str]) -> None:
        """The client NACKed the response that carried `resources` (name -> version), with
        Envoy's `message`; `version` is the SotW response's version ("" in delta). The stream
        may go on to find which of several resources is to blame: see on_rejected."""

    def on_rejected(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str], message: str) -> None:
        """These resource versions are known to be rejected, and will not be sent again on this
        stream: exactly one when a NACK could be narrowed down, else all that travelled together."""


class NoCallbacks:
    """Callbacks that do nothing: a base for implementations that listen to a few events."""

    def on_stream_open(self, stream: StreamInfo) -> None:
        pass

    def on_stream_closed(self, stream: StreamInfo) -> None:
        pass

    def on_request(self, stream: StreamInfo, type_url: str) -> None:
        pass

    def on_response(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
                    removed: Sequence[str]) -> None:
        pass

    def on_ack(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
               removed: Sequence[str], state: Mapping[str, str] | None) -> None:
        pass

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, message: str,
                resources: Mapping[str, str]) -> None:
        pass

    def on_rejected(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str], message: str) -> None:
        pass


class FanOut:
    """Several callbacks as one, called in order (so a later one sees what an earlier one recorded)."""

    def __init__(self, *callbacks: StreamCallbacks) -> None:
        self.callbacks = callbacks

    def on_stream_open(self, stream: StreamInfo) -> None:
        for c in self.callbacks:
            c.on_stream_open(stream)

    def on_stream_closed(self, stream: StreamInfo) -> None:
        for c in self.callbacks:
            c.on_stream_closed(stream)

    def on_request(self, stream: StreamInfo, type_url: str) -> None:
        for c in self.callbacks:
            c.on_request(stream, type_url)

    def on_response(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
                    removed: Sequence[str]) -> None:
        for c in self.callbacks:
            c.on_response(stream, type_url, resources, removed)

    def on_ack(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str],
               removed: Sequence[str], state: Mapping[str, str] | None) -> None:
        for c in self.callbacks:
            c.on_ack(stream, type_url, resources, removed, state)

    def on_nack(self, stream: StreamInfo, type_url: str, version: str, message: str,
                resources: Mapping[str, str]) -> None:
        for c in self.callbacks:
            c.on_nack(stream, type_url, version, message, resources)

    def on_rejected(self, stream: StreamInfo, type_url: str, resources: Mapping[str, str], message: str) -> None:
        for c in self.callbacks:
            c.on_rejected(stream, type_url, resources, message)
