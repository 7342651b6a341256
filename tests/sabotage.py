"""A NACK on purpose: validation keeps user input from making Envoy NACK, so the tests that need
one make it in a test-only way."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from envoy.config.route.v3 import route_components_pb2

from xds_operator.ir.ir import RouteEntryIR
from xds_operator.translate import routes as route_translation


def route_translator_with_a_bad_regex(breaks: Callable[[RouteEntryIR], bool]
                                     ) -> Callable[[RouteEntryIR], route_components_pb2.Route]:
    """translate_route, but the entries `breaks` picks get a regex RE2 refuses (Envoy NACKs the
    route configuration that holds them)."""
    real_translate = route_translation.translate_route

    def sabotaged(entry: RouteEntryIR) -> route_components_pb2.Route:
        translated = real_translate(entry)
        if not breaks(entry):
            return translated
        broken = type(translated)()
        broken.CopyFrom(translated)
        broken.match.safe_regex.regex = "(unclosed"
        return broken

    return sabotaged


def translate_route_with_a_bad_regex(monkeypatch: pytest.MonkeyPatch, route_name: str) -> Callable[[], None]:
    """From now on the Route `route_name` is translated with a regex RE2 refuses (Envoy NACKs its
    route configuration); returns what undoes that."""
    real_translate = route_translation.translate_route
    monkeypatch.setattr(route_translation, "translate_route",
                        route_translator_with_a_bad_regex(lambda entry: entry.source.name == route_name))
    return lambda: monkeypatch.setattr(route_translation, "translate_route", real_translate)
