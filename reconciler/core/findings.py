"""Findings: what validation says about a place in the desired state, as values."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Finding:
    """One problem at one place: `path:line:col: field: message [code]`."""

    path: str
    line: int
    column: int
    field: str
    message: str
    code: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}"
        field = f" {self.field}:" if self.field else ""
        warning = " warning:" if self.severity is Severity.WARNING else ""
        return f"{where}:{warning}{field} {self.message} [{self.code}]"

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def as_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "field": self.field,
            "message": self.message,
            "code": self.code,
            "severity": self.severity.value,
        }


def has_errors(findings: tuple[Finding, ...] | list[Finding]) -> bool:
    return any(f.is_error for f in findings)
