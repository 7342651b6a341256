"""Envoy's limits on user text, in Envoy's units, and the form text takes on its way to Envoy.

Envoy checks its configuration with protoc-gen-validate rules (`validate.rules` in the API protos)
and a few checks in code. Where a limit is stated in bytes (`max_bytes`), it counts the UTF-8
bytes of the field as sent, so validation counts bytes of the translated string too, never
characters: 5,462 x "€" is 5,462 characters but 16,386 bytes.

Every field the translator fills from user text, Envoy's rule on it, and validation's check; a
"!" marks what was unchecked before issue 6:

  request/responseHeaders set/add value   core.v3.HeaderValue.value: max_bytes 16384, HTTP_HEADER_VALUE; read as
                                          a format string, so % is sent as %%
      -> at most 8,192 characters (CRD) and 16,384 bytes once % is %%, no control characters
      ! was 8,192 characters only: 5,462 x "€" (16,386 bytes) passed and Envoy NACKed it
  request/responseHeaders set/add name    core.v3.HeaderValue.key: min_len 1, max_bytes 16384, HTTP_HEADER_NAME;
                                          not Host or a :pseudo-header (Envoy's code)
      -> an RFC 7230 token (ASCII), at most 256 characters, 16,384 bytes (now stated, was safe)
  request/responseHeaders remove          Route.*_headers_to_remove: min_len 1, HTTP_HEADER_NAME -> as a name
  matches.headers name                    route.v3.HeaderMatcher.name: min_len 1, HTTP_HEADER_NAME -> as a name
  matches.headers/queryParams value       matcher.v3.StringMatcher.exact: no rule -> <= 4,096 characters, no
                                          control characters
  matches.queryParams name                route.v3.QueryParameterMatcher.name: min_len 1, max_bytes 1024
      -> at most 256 characters and 1,024 bytes
      ! was 256 characters only, safe by luck (256 x 4 bytes)
  any RegularExpression value             matcher.v3.RegexMatcher.regex: min_len 1; RE2 program size <= 100
                                          (runtime default) -> RE2 compiles it, program size, <= 1,024 characters
  matches.path Exact / Prefix             RouteMatch.path, prefix: no rule; path_separated_prefix: ^[^?#]+[^?#/]$
                                          -> absolute path, no ?, #, spaces or control characters; a trailing /
                                          is dropped before it becomes path_separated_prefix
  directResponse.body                     DirectResponseAction.body.inline_string: at most 4,096 bytes (Envoy's
                                          code: max_direct_response_body_size_bytes) -> 4,096 characters and bytes
  hostnames                               VirtualHost.domains: min_items 1, HTTP_HEADER_VALUE; VirtualHost.name:
                                          min_len 1 -> DNS-1123 subdomain, or *. + one, or *; <= 253
  redirect hostname / path                RedirectAction.host_redirect, path_redirect: HTTP_HEADER_VALUE
                                          -> DNS name / absolute path
  rewrite hostname / pathPrefix           RouteAction.host_rewrite_literal, prefix_rewrite: HTTP_HEADER_VALUE
                                          -> DNS name / absolute path
  healthCheck.path                        HealthCheck.HttpHealthCheck.path: min_len 1, HTTP_HEADER_VALUE (strict)
                                          -> absolute path, no control characters
  dns.hostname                            SocketAddress.address: min_len 1 -> DNS-1123 subdomain
  metadata.namespace, metadata.name       Cluster.name, ClusterLoadAssignment.cluster_name, RouteAction.cluster,
                                          ClusterWeight.name: min_len 1; Route.name: no rule
      -> DNS-1123 label (<= 63) and subdomain (<= 253), as Kubernetes; joined injectively (objects.joined)
      ! was unchecked: namespace "a/b" + name "c" and "a" + "b/c" were one cluster, a/b/c

(HTTP_HEADER_NAME and HTTP_HEADER_VALUE with strict: false refuse only NUL, CR and LF.)

Envoy states no other byte limit on these fields; the character limits above are the CRDs' own
(`maxLength` counts characters), declared once with the byte limits in route_spec.py, from which
both validation and crds/ come.
"""

from __future__ import annotations

# core.v3.HeaderValue: key and value `max_bytes: 16384`.
HEADER_NAME_MAX_BYTES = 16384
HEADER_VALUE_MAX_BYTES = 16384
# route.v3.QueryParameterMatcher.name `max_bytes: 1024`.
QUERY_PARAM_NAME_MAX_BYTES = 1024
# RouteConfiguration.max_direct_response_body_size_bytes, left at Envoy's default.
DIRECT_RESPONSE_BODY_MAX_BYTES = 4096
# Envoy refuses regexes whose compiled RE2 program is larger than this (runtime key
# re2.max_program_size.error_level, default 100).
MAX_REGEX_PROGRAM_SIZE = 100


def header_value_as_sent(value: str) -> str:
    """A header value to add, as Envoy receives it: Envoy reads these values as format strings
    (%VAR% operators), so a literal % must be %%, or a value such as "50%" would be refused."""
    return value.replace("%", "%%")


def utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())  # (no copy for ASCII, the common case)
