"""CPU of the ADS state machines alone (no grpc, no network): what the server spends per stream.

P streams of one proxy group sync N clusters, N endpoint sets, one listener and one route
configuration of N virtual hosts, every response ACKed as Envoy does; then one virtual host
changes and every stream is pushed the new route configuration and ACKs it. Process CPU time,
so a loaded machine disturbs it less than wall-clock figures.

    uv run python benchmarks/stream_cpu.py [--objects 5000] [--proxies 50] [--delta]
"""

from __future__ import annotations

import argparse
import time

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import duration_pb2

from xds_operator.translate.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds_operator.xds.callbacks import StreamInfo
from xds_operator.xds.delta import DeltaStream
from xds_operator.xds.proxies import ProxyRegistry
from xds_operator.xds.snapshot import Snapshot
from xds_operator.xds.sotw import SotwStream


def snapshot(n: int, marker: str) -> Snapshot:
    clusters = {f"c{i}": cluster_pb2.Cluster(name=f"c{i}", connect_timeout=duration_pb2.Duration(seconds=1))
                for i in range(n)}
    assignments = {}
    for i in range(n):
        assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=f"c{i}")
        assignment.endpoints.add().lb_endpoints.add().endpoint.address.socket_address.port_value = 8000 + i % 50000
        assignments[f"c{i}"] = assignment
    hosts = [route_components_pb2.VirtualHost(name=f"v{i}-{marker if i == 0 else 'a'}", domains=[f"h{i}"])
             for i in range(n)]
    return Snapshot.from_messages({CLUSTER: clusters, ENDPOINT: assignments,
                                   LISTENER: {"l": listener_pb2.Listener(name="l")},
                                   ROUTE: {"l": route_pb2.RouteConfiguration(name="l", virtual_hosts=hosts)}})


class Client:
    """Plays Envoy on one state machine: requests, and ACKs of the newest response per type."""

    def __init__(self, stream: SotwStream | DeltaStream, delta: bool) -> None:
        self.stream, self.delta = stream, delta
        self.last: dict[str, object] = {}
        self.names: dict[str, tuple[str, ...]] = {}
        self.version: dict[str, str] = {}

    def request(self, type_url: str, names: tuple[str, ...] | None = None, *, ack: bool = False) -> list:
        last = self.last.get(type_url) if ack else None
        nonce = last.nonce if last is not None else ""
        if self.delta:
            out = self.stream.on_request(discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=names or (), response_nonce=nonce))
        else:
            if names is not None:
                self.names[type_url] = names
            if last is not None:
                self.version[type_url] = last.version_info
            out = self.stream.on_request(discovery_pb2.DiscoveryRequest(
                type_url=type_url, resource_names=self.names.get(type_url, ()),
                version_info=self.version.get(type_url, ""), response_nonce=nonce))
        for response in out:
            self.last[response.type_url] = response
        return out


def main(n: int, proxies: int, delta: bool) -> None:
    registry = ProxyRegistry()
    current = [snapshot(n, "a")]
    stream_class = DeltaStream if delta else SotwStream
    clients = []
    for i in range(proxies):
        info = StreamInfo(i, f"envoy-{i}", "g", stream_class.protocol)
        registry.on_stream_open(info)
        clients.append(Client(stream_class(info, registry, lambda: current[0]), delta))
    names = tuple(f"c{i}" for i in range(n))
    started = time.process_time()
    for c in clients:
        c.request(CLUSTER)
        c.request(ENDPOINT, names)
        c.request(CLUSTER, ack=True)
        c.request(ENDPOINT, ack=True)
        c.request(LISTENER)
        c.request(ROUTE, ("l",))
        c.request(LISTENER, ack=True)
        c.request(ROUTE, ack=True)
    synced = time.process_time() - started
    assert all(len(p.acked.get(ENDPOINT, {})) == n for p in registry.proxies.values())
    current[0] = snapshot(n, "b")
    started = time.process_time()
    for c in clients:
        pushed = c.stream.on_change()
        assert [r.type_url for r in pushed] == [ROUTE]
        c.last[ROUTE] = pushed[0]
        c.request(ROUTE, ack=True)
    changed = time.process_time() - started
    print(f"{proxies} {'delta' if delta else 'SotW'} streams, {n} clusters and endpoint sets, "
          f"{n} virtual hosts (state machines only, CPU):")
    print(f"  sync, 4 types ACKed       {synced * 1000:7.0f} ms   ({synced * 1000 / proxies:.1f} ms per stream)")
    print(f"  one route change pushed   {changed * 1000:7.0f} ms   ({changed * 1000 / proxies:.2f} ms per stream)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--proxies", type=int, default=50)
    parser.add_argument("--delta", action="store_true")
    args = parser.parse_args()
    main(args.objects, args.proxies, args.delta)
