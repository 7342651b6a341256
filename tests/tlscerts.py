"""The tests' certificates (dev/certificates.py, with long validity by default) and Secrets of them."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Sequence

from xds_operator.dev import certificates
from xds_operator.dev.certificates import Issued

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def make_ca(common_name: str = "test CA", *, not_before: datetime.datetime = NOW - DAY,
            not_after: datetime.datetime = NOW + 3650 * DAY, issuer: Issued | None = None) -> Issued:
    """A self-signed CA, or an intermediate one signed by `issuer`."""
    return certificates.make_ca(common_name, not_before=not_before, not_after=not_after, issuer=issuer)


def make_leaf(ca: Issued, *names: str, not_before: datetime.datetime = NOW - DAY,
              not_after: datetime.datetime = NOW + 365 * DAY, client: bool = False,
              uris: Sequence[str] = (), ips: Sequence[str] = ()) -> Issued:
    """A leaf signed by `ca` for DNS `names` (and URI and IP address SANs)."""
    return certificates.make_leaf(ca, *names, not_before=not_before, not_after=not_after, client=client,
                                  uris=uris, ips=ips)


def tls_secret(name: str, leaf: Issued, *, namespace: str = "default", chain: bytes = b"",
               ca: bytes | None = None) -> dict:
    """A kubernetes.io/tls Secret manifest (base64 data, as the API returns it)."""
    data = {"tls.crt": leaf.cert_pem + chain, "tls.key": leaf.key_pem}
    if ca is not None:
        data["ca.crt"] = ca
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def ca_secret(name: str, ca: Issued, *, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": name, "namespace": namespace},
            "stringData": {"ca.crt": ca.cert_pem.decode()}}


def ca_config_map(name: str, ca: Issued, *, namespace: str = "default") -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"ca.crt": ca.cert_pem.decode()}}
