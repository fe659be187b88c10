"""Version ranges a Service may use, one row per (range, version, allowed)."""

from __future__ import annotations

import pytest

from reconciler.core.compile.versions import Range, RangeError, Version

ROWS = [
    ("1.5.0", "1.5.0", True),
    ("1.5.0", "1.5.1", False),
    ("=1.5.0", "1.5.0", True),
    ("^1.4", "1.4.0", True),
    ("^1.4", "1.9.3", True),
    ("^1.4", "2.0.0", False),
    ("^1.4", "1.3.9", False),
    ("^0.2.3", "0.2.9", True),
    ("^0.2.3", "0.3.0", False),
    ("^0.0.3", "0.0.4", False),
    ("~1.4", "1.4.7", True),
    ("~1.4", "1.5.0", False),
    ("~1.4.2", "1.4.1", False),
    ("~1.4.2", "1.4.9", True),
    (">=1.4 <2", "1.9.9", True),
    (">=1.4 <2", "2.0.0", False),
    (">= 1.4, < 2", "1.5.0", None),
    ("1.x", "1.7.0", True),
    ("1.x", "2.0.0", False),
    ("1.4.*", "1.4.3", True),
    ("*", "9.9.9", True),
    ("<1.0.0 || >=3", "0.9.0", True),
    ("<1.0.0 || >=3", "2.0.0", False),
    (">1.4", "1.4.5", False),
    (">1.4", "1.5.0", True),
    ("<=1.4", "1.4.9", True),
    ("^1.4", "1.5.0-rc.1", False),
    ("^1.5.0-rc.1", "1.5.0-rc.2", True),
    ("^1.5.0-rc.1", "1.5.0", True),
]


@pytest.mark.parametrize(("text", "version", "allowed"), ROWS, ids=[f"{r[0]}~{r[1]}" for r in ROWS])
def test_range_allows(text: str, version: str, allowed: bool | None) -> None:
    """A range allows exactly the versions npm would (None: the range itself is refused)."""
    if allowed is None:
        with pytest.raises(RangeError):
            Range.parse(text)
        return
    assert Range.parse(text).matches(Version.parse(version)) is allowed


def test_best_is_the_highest_allowed() -> None:
    """Resolution picks the highest release the range allows, ignoring pre-releases."""
    versions = [Version.parse(v) for v in ("1.4.0", "1.5.0", "1.6.0-beta.1", "2.0.0")]
    assert str(Range.parse("^1.4").best(versions)) == "1.5.0"
    assert Range.parse("^3").best(versions) is None


@pytest.mark.parametrize(
    ("low", "high"),
    [
        ("1.0.0-alpha", "1.0.0-alpha.1"),
        ("1.0.0-alpha.1", "1.0.0-beta"),
        ("1.0.0-rc.1", "1.0.0"),
        ("1.0.0-2", "1.0.0-10"),
        ("1.9.0", "1.10.0"),
    ],
)
def test_precedence(low: str, high: str) -> None:
    """Ordering follows semver precedence, pre-release identifiers included."""
    assert Version.parse(low) < Version.parse(high)
