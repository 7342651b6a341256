"""Reading untrusted YAML into typed values while collecting precise, per-field errors.

Each reader returns the value (or None when it is unusable) and records an error with the
field's path, so that one pass reports every problem of a document, never raising.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .durations import parse_duration_ms
from .limits import utf8_size

# The patterns the CRDs state and the model checks (with fullmatch: a pattern's `$` would also
# accept a final newline in Python, never in RE2, which the API server uses).
# RFC 1123 subdomain, lower case, as Kubernetes and Envoy domain matching expect.
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# RFC 1035 label: what Kubernetes requires of a Service name and a port name.
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# DNS-1123 label: what Kubernetes requires of a namespace (may start with a digit, unlike RFC 1035).
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# An IPv4 address in its normal form: four decimal octets of 0-255 without leading zeros.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(\.{_OCTET}){{3}}", re.ASCII)
# RFC 7230 token: what an HTTP header name may contain.
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
# An HTTP header value: no control characters but tab (RFC 7230 field-value), which Envoy refuses.
HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
HEADER_VALUE_MESSAGE = "must not contain control characters such as CR, LF or NUL"
# An absolute path without query, fragment, spaces or control characters: Envoy refuses NUL, CR and
# LF in rewrites and redirects and any control character in health check paths. The white space
# is spelled out (Python's \s is Unicode, RE2's ASCII), the characters above U+00FF literally
# (RE2 has no \u escape, Python's re no \x{...}).
PATH = re.compile("^/[^?#\\x00-\\x20\\x7f\\x85\\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$")


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Fields:
    """Collects errors while reading one document."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    # -- structure -------------------------------------------------------------------------

    def mapping(self, value: Any, path: str, allowed: Iterable[str]) -> dict[str, Any] | None:
        """A mapping whose keys are all in `allowed` (unknown keys are errors: they are typos)."""
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error(path, f"must be an object, not {_kind(value)}")
            return None
        if not isinstance(allowed, frozenset):
            allowed = set(allowed)
        for key in value:
            if key not in allowed:
                self.error(f"{path}.{key}", f"unknown field (expected one of: {', '.join(sorted(allowed))})")
        return value

    def sequence(self, value: Any, path: str, *, max_items: int = 1000) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"must be a list, not {_kind(value)}")
            return []
        if len(value) > max_items:
            self.error(path, f"has {len(value)} items; at most {max_items} are allowed")
            return []
        return value

    # -- scalars ---------------------------------------------------------------------------

    def string(self, value: Any, path: str, *, required: bool = False, max_len: int = 1024,
               pattern: re.Pattern[str] | None = None, what: str = "", pattern_message: str | None = None,
               max_bytes: int | None = None, as_sent: Callable[[str], str] | None = None,
               as_sent_note: str = "") -> str | None:
        """A string of at most `max_len` characters (the CRD's maxLength) and, when Envoy limits the
        field in bytes, at most `max_bytes` UTF-8 bytes in the form Envoy receives it (`as_sent`:
        after the translator's escaping, which `as_sent_note` names in the message)."""
        if value is None:
            if required:
                self.error(path, "is required")
            return None
        if not isinstance(value, str):
            self.error(path, f"must be a string, not {_kind(value)}")
            return None
        if not is_utf8(value):
            # YAML and JSON escapes can produce lone surrogates, which neither RE2 nor protobuf take.
            self.error(path, "must be valid Unicode text (it contains a lone surrogate)")
            return None
        if required and not value:
            self.error(path, "must not be empty")
            return None
        if len(value) > max_len:
            self.error(path, f"is {len(value)} characters long; at most {max_len} are allowed")
            return None
        if max_bytes is not None:
            size = utf8_size(as_sent(value) if as_sent is not None else value)
            if size > max_bytes:
                self.error(path, f"is {size} bytes in UTF-8{as_sent_note}, "
                                 f"more than Envoy's limit of {max_bytes} bytes")
                return None
        if pattern is not None and not pattern.fullmatch(value):
            self.error(path, pattern_message or f"{value!r} is not {what or 'valid'}")
            return None
        return value

    def integer(self, value: Any, path: str, *, minimum: int, maximum: int, required: bool = False) -> int | None:
        if value is None:
            if required:
                self.error(path, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be an integer, not {_kind(value)}")
            return None
        if not minimum <= value <= maximum:
            self.error(path, f"{value} is out of range [{minimum}, {maximum}]")
            return None
        number: int = value
        return number

    def enum(self, value: Any, path: str, choices: Iterable[str], *, required: bool = False) -> str | None:
        choices = tuple(choices)
        text = self.string(value, path, required=required)
        if text is not None and text not in choices:
            self.error(path, f"{text!r} is not one of: {', '.join(choices)}")
            return None
        return text

    def duration(self, value: Any, path: str, *, minimum_ms: int = 0, maximum_ms: int = 24 * 3_600_000) -> int | None:
        text = self.string(value, path)
        if text is None:
            return None
        try:
            ms = parse_duration_ms(text)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        if not minimum_ms <= ms <= maximum_ms:
            self.error(path, f"{text} is out of range [{minimum_ms}ms, {maximum_ms}ms]")
            return None
        return ms

    def dns_name(self, value: Any, path: str, *, required: bool = False) -> str | None:
        return self.string(value, path, required=required, max_len=253, pattern=DNS_NAME,
                           what="a lower-case DNS name (RFC 1123)")

    def object_name(self, value: Any, path: str) -> str | None:
        """metadata.name as Kubernetes checks it (a DNS-1123 subdomain)."""
        if value == "" or value is None:
            self.error(path, "is required")
            return None
        return self.string(value, path, max_len=253, pattern=DNS_NAME,
                           what="a lower-case DNS-1123 subdomain, as Kubernetes requires of names (letters a-z, "
                                "digits, '-' and '.', starting and ending with a letter or digit)")

    def namespace(self, value: Any, path: str) -> str | None:
        """metadata.namespace as Kubernetes checks it (a DNS-1123 label)."""
        return self.string(value, path, required=True, max_len=63, pattern=DNS_1123_LABEL,
                           what="a lower-case DNS-1123 label, as Kubernetes requires of namespaces (letters a-z, "
                                "digits and '-', starting and ending with a letter or digit)")

    def ip_address(self, text: str, path: str) -> str | None:
        """An IP address, as Kubernetes' isIP() takes it, in its normal form."""
        if _CANONICAL_IPV4.fullmatch(text):
            return text  # what ipaddress would give back, far sooner (10,000 Backends: 0.1 s)
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            self.error(path, f"{text!r} is not an IPv4 or IPv6 address (use spec.dns for host names)")
            return None
        # As Kubernetes' isIP(): no zone (fe80::1%eth0) and no IPv4-mapped IPv6 address.
        if isinstance(address, ipaddress.IPv6Address) and (address.scope_id or address.ipv4_mapped):
            self.error(path, f"{text!r}: IPv6 zones and IPv4-mapped addresses are not supported")
            return None
        return str(address)

def is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


