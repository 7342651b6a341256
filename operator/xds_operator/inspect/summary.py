"""One-line summaries of Envoy resources (as json_format dicts with proto field names)."""

from __future__ import annotations

from typing import Any

HCM = "envoy.filters.network.http_connection_manager"


def listener_lines(listener: dict[str, Any]) -> list[str]:
    socket = listener.get("address", {}).get("socket_address", {})
    lines = [f"listener {listener['name']} on {socket.get('address', '?')}:{socket.get('port_value', 0)}"]
    for i, chain in enumerate(listener.get("filter_chains", [])):
        for f in chain.get("filters", []):
            rds = f.get("typed_config", {}).get("rds", {}).get("route_config_name")
            via = f", routes from RDS {rds}" if f.get("name") == HCM and rds else ""
            lines.append(f"  filter chain {i}: {f.get('name')}{via}")
    return lines


def route_line(route: dict[str, Any]) -> str:
    return f"{route.get('name', '')}  {match_text(route.get('match', {}))}  -> {action_text(route)}"


def match_text(match: dict[str, Any]) -> str:
    parts = []
    for field, label in (("prefix", "prefix"), ("path", "path"), ("path_separated_prefix", "prefix"),
                         ("safe_regex", "regex")):
        if field in match:
            value = match[field]["regex"] if field == "safe_regex" else match[field]
            parts.append(f"{label} {value}")
    for header in match.get("headers", []):
        name = header["name"]
        text = _string_match(header.get("string_match", {}))
        parts.append(f"method {text.lstrip('=')}" if name == ":method" else f"header {name}{text}")
    for param in match.get("query_parameters", []):
        parts.append(f"query {param['name']}{_string_match(param.get('string_match', {}))}")
    return ", ".join(parts) or "anything"


def _string_match(matcher: dict[str, Any]) -> str:
    if "safe_regex" in matcher:
        return f"~{matcher['safe_regex']['regex']}"
    return f"={matcher.get('exact', '')}"


def action_text(route: dict[str, Any]) -> str:
    if "redirect" in route:
        r = route["redirect"]
        parts = [f"{label} {r[field]}" for field, label in (("scheme_redirect", "scheme"), ("host_redirect", "host"),
                                                            ("port_redirect", "port"), ("path_redirect", "path"))
                 if field in r]
        return f"redirect {r.get('response_code', 'MOVED_PERMANENTLY')}: {', '.join(parts) or 'same URL'}"
    if "direct_response" in route:
        return f"respond {route['direct_response'].get('status')}"
    action = route.get("route", {})
    if "cluster" in action:
        text = f"cluster {action['cluster']}"
    else:
        weighted = action.get("weighted_clusters", {}).get("clusters", [])
        text = "clusters " + ", ".join(f"{c['name']} weight {c.get('weight', 0)}" for c in weighted)
    extras = []
    if "timeout" in action:
        extras.append(f"timeout {action['timeout']}")
    if "retry_policy" in action:
        extras.append(f"{action['retry_policy'].get('num_retries', 1)} retries on {action['retry_policy'].get('retry_on')}")
    if "prefix_rewrite" in action:
        extras.append(f"prefix rewritten to {action['prefix_rewrite']}")
    if "host_rewrite_literal" in action:
        extras.append(f"host rewritten to {action['host_rewrite_literal']}")
    for mirror in action.get("request_mirror_policies", []):
        extras.append(f"mirrored to {mirror['cluster']}")
    return text + (f" ({', '.join(extras)})" if extras else "")


def cluster_line(cluster: dict[str, Any]) -> str:
    timeout = cluster.get("connect_timeout", "?")
    return (f"cluster {cluster['name']}: {cluster.get('type', 'STATIC')}, {cluster.get('lb_policy', 'ROUND_ROBIN')},"
            f" connect timeout {timeout}")


def endpoints_line(assignment: dict[str, Any]) -> str:
    addresses = [
        f"{s.get('address')}:{s.get('port_value', 0)}"
        for locality in assignment.get("endpoints", [])
        for lb in locality.get("lb_endpoints", [])
        if (s := lb.get("endpoint", {}).get("address", {}).get("socket_address"))
    ]
    return "endpoints: " + (", ".join(addresses) if addresses else "none")
