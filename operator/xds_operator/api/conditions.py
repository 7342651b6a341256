"""Kubernetes-style status conditions, as the build step and the status writer produce them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACCEPTED = "Accepted"
RESOLVED_REFS = "ResolvedRefs"
PROGRAMMED = "Programmed"


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
