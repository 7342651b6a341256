"""What a source reports about its input besides objects: problems with a place and a severity."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.Enum):
    """ERROR: input that is refused (`validate` exits 1). WARNING: accepted, but likely not what was
    meant (an error with `validate --strict`). NOTE: information, such as a document of another kind."""

    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem at a place: a file, and the 1-based line and column when known."""

    path: str
    line: int = 0
    column: int = 0
    message: str = ""
    severity: Severity = Severity.ERROR

    @property
    def origin(self) -> str:
        """path[:line[:column]], the form editors and compilers use."""
        place = self.path
        if self.line:
            place += f":{self.line}"
            if self.column:
                place += f":{self.column}"
        return place

    def __str__(self) -> str:
        return f"{self.origin}: {self.severity.value}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"severity": self.severity.value, "file": self.path, "line": self.line, "column": self.column,
                "message": self.message}

    def sort_key(self) -> tuple[str, int, int, str]:
        return self.path, self.line, self.column, self.message
