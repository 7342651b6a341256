"""Kubernetes-style status conditions, as the build step and the status writer produce them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACCEPTED = "Accepted"
RESOLVED_REFS = "ResolvedRefs"
PROGRAMMED = "Programmed"
# Abnormal-true, as Gateway API's listener condition: True when what a Route asks for is taken by another.
CONFLICTED = "Conflicted"

# Accepted=False: a TLS hostname of the Route's port that an earlier Route terminates with other TLS settings.
HOSTNAME_CONFLICT = "HostnameConflict"


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""

    def to_dict(self, generation: int) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": generation,
        }
