"""Reading a running server's HTTP side (`serve` and `run` both serve status/web.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:18001"


class CommandError(Exception):
    """A problem the user can fix: printed as one line, exit status 2."""


class ServerClient:
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        if "://" not in self.url:
            self.url = "http://" + self.url
        self.timeout = timeout

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise CommandError(f"{self.url}: {_server_message(exc)}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(f"cannot reach the server at {self.url}: {reason}") from None
        try:
            return json.loads(body)
        except ValueError:
            raise CommandError(f"{url} did not answer JSON: is this an xds-operator server?") from None


def _server_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        if exc.code == 404:
            return f"{exc.url} not found: is this an xds-operator server of this version?"
        return f"HTTP {exc.code} {exc.reason}"
