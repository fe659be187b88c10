"""Options and helpers shared by the commands: reading the desired state, printing findings."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from contract.errors import PlumbError
from reconciler.core.compile.desired import Desired, SourceFile, compile_desired
from reconciler.core.findings import Finding
from reconciler.drivers.desired_source import (
    SourceCache,
    open_repository,
    read_commit_files,
    read_worktree_files,
)

F = TypeVar("F", bound=Callable[..., Any])


def source_options(function: F) -> F:
    """`[PATH] [--rev REV]`: a working directory, or a commit of the Git repository holding PATH."""
    function = click.option(
        "--rev",
        metavar="REV",
        help="Read the files of this commit (branch, tag, sha) from the Git repository holding PATH, "
        "without a checkout.",
    )(function)
    return click.argument("path", type=click.Path(path_type=Path, file_okay=False), default=".")(function)


def read_source(path: Path, rev: str | None) -> list[SourceFile]:
    if rev is None:
        return read_worktree_files(path)
    repo = open_repository(path)
    workdir = Path(repo.workdir).resolve() if repo.workdir else None
    subdir = ""
    if workdir is not None and path.resolve() != workdir and workdir in path.resolve().parents:
        subdir = path.resolve().relative_to(workdir).as_posix()
    # one commit read per command: its cache is this command's alone and ends with it
    return read_commit_files(repo, rev, subdir=subdir, cache=SourceCache())[1]


def load_desired(path: Path, rev: str | None) -> Desired:
    return compile_desired(read_source(path, rev))


def finding_lines(findings: Sequence[Finding], *, root: str = "") -> list[str]:
    """Findings as people read them, one line each: `path:line:col: field: message [code]`.

    `root` is put before each path (findings name files relative to the repository root)."""
    return [f"{root}{finding}" for finding in findings]


def print_findings(findings: Sequence[Finding], fmt: str, *, root: str = "") -> None:
    """Print findings as text (stderr-friendly lines), JSON, or GitHub annotations."""
    if fmt == "json":
        click.echo(json.dumps([f.as_json() for f in findings], indent=2))
        return
    if fmt != "github":
        for line in finding_lines(findings, root=root):
            click.echo(line)
        return
    for finding in findings:
        level = "error" if finding.is_error else "warning"
        title = f"{finding.field}: " if finding.field else ""
        message = f"{title}{finding.message} [{finding.code}]".replace("%", "%25").replace("\n", "%0A")
        click.echo(f"::{level} file={root}{finding.path},line={finding.line},col={finding.column}::{message}")


def fail(error: PlumbError) -> None:
    """Print a known error as one clear line and exit 1."""
    click.echo(f"plumb: {error}", err=True)
    sys.exit(1)
