"""Which proxy group a client certificate may ask for: the rule binding a proxy to its node.cluster.

A proxy's certificate names its group with a URI subject alternative name

    spiffe://<trust domain>/xds-group/<node.cluster>

(any trust domain: trust comes from the client CA; the group percent-encoded where it is not a
plain URI path character). An ADS stream whose first request's node.cluster is not named by the
peer's certificate is refused, so one proxy's certificate cannot fetch another group's config.
node.id is not bound: it names one proxy for logs and status, while config is per group.
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit

from cryptography import x509

SCHEME = "spiffe"
GROUP_PATH = "/xds-group/"


def group_uri(group: str, trust_domain: str = "xds-operator") -> str:
    """The URI SAN a certificate for proxies of `group` carries."""
    return f"{SCHEME}://{trust_domain}{GROUP_PATH}{quote(group, safe='')}"


def certificate_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The certificate's subject alternative names (URIs and DNS names), for log lines."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.get_values_for_type(x509.UniformResourceIdentifier)) + tuple(san.get_values_for_type(x509.DNSName))


def groups_named(cert: x509.Certificate) -> frozenset[str]:
    """The proxy groups whose config the holder of `cert` may fetch."""
    groups = set()
    for name in certificate_names(cert):
        uri = urlsplit(name)
        if uri.scheme == SCHEME and uri.netloc and uri.path.startswith(GROUP_PATH) and not (uri.query or uri.fragment):
            group = uri.path[len(GROUP_PATH):]
            if group and "/" not in group:
                groups.add(unquote(group))
    return frozenset(groups)


def refusal(node_cluster: str, peer_pem: bytes | None) -> str | None:
    """Why a stream whose node.cluster is `node_cluster`, from a peer with certificate `peer_pem`
    (PEM, as grpc's auth context holds it), is refused; None if it is allowed."""
    if peer_pem is None:
        return "the client presented no certificate"
    try:
        cert = x509.load_pem_x509_certificate(peer_pem)
    except ValueError as exc:
        return f"the client certificate does not parse ({exc})"
    if node_cluster in groups_named(cert):
        return None
    names = ", ".join(certificate_names(cert)) or "none"
    return (f"the client certificate ({cert.subject.rfc4514_string() or 'no subject'}; subject alternative names: "
            f"{names}) does not name node.cluster {node_cluster!r}: it needs the URI SAN "
            f"spiffe://<trust domain>{GROUP_PATH}{quote(node_cluster, safe='')}")
