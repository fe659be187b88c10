"""`plumb rollback`: commit to the desired branch a Service's `spec.version` pinned to an earlier Release.

The rollback is an ordinary commit, reviewed and reverted like any other: it edits one line of
the Service's file (the `version` value, or adds the key when there is none) and leaves every
other byte as it was. It is written through pygit2 without a checkout and moves the branch by
compare-and-swap, so a branch that moved meanwhile is refused, never overwritten. In a working
copy whose checked-out branch it writes, the file and the index are updated as `git commit`
would leave them (and a file with local changes is refused).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import pygit2
import yaml

from contract.errors import PlumbError, PushRejected, UsageError
from reconciler.cli.commands.common import fail
from reconciler.core.compile.desired import compile_desired
from reconciler.core.compile.model import Model
from reconciler.core.compile.versions import RangeError, Version
from reconciler.drivers.desired_source import SourceCache, open_repository, read_commit_files
from reconciler.drivers.statestore import compare_and_swap

DEFAULT_AUTHOR = ("Plumb", "plumb@localhost")


@dataclass(frozen=True)
class Rollback:
    """What a rollback did: the file edited, the values before and after, and the commit written."""

    service: str
    path: str
    current: str  # the version the service resolved to
    target: str  # the version it is pinned to now
    old_value: str | None  # `spec.version` as it was written (None: absent)
    new_value: str
    commit: str
    branch: str


@click.command()
@click.argument("service")
@click.option(
    "--to", "to", metavar="VERSION", help="Pin this version (it needs a Release) instead of the previous one."
)
@click.option("--message", "-m", metavar="TEXT", help="Why: added to the commit message.")
@click.option(
    "--repo",
    "repo_path",
    type=click.Path(path_type=Path, file_okay=False),
    default=".",
    show_default=True,
    help="The desired-state repository: bare, or a working copy (or a directory inside one).",
)
@click.option("--branch", default="main", show_default=True, help="The desired branch to commit to.")
def rollback(service: str, to: str | None, message: str | None, repo_path: Path, branch: str) -> None:
    """Roll SERVICE back: commit its `spec.version` pinned to the previous Release (or --to VERSION).

    The previous Release is the highest one below the version SERVICE resolves to now on the tip
    of --branch. The commit changes one line of the Service's file, e.g. `version: "^1.5"` becomes
    `version: "1.4.0"`; the reconciler then moves the fleet as for any other change: at once
    back to the version an unfinished (or failed) rollout started from, otherwise batch by batch
    as the older Release's rollout says. To undo it, revert the commit or set `version` again.
    The branch is moved only if it has not moved meanwhile; push it as usual when --repo is a clone.

    Refused with exit status 1: an unknown service, no earlier Release, a --to with no Release,
    or a service already at that version.

    \b
    Examples:
      plumb rollback api -m "1.5.0 leaks connections"
      plumb rollback api --to 1.3.2 --repo /srv/git/fleet.git --branch production
    """
    try:
        done = roll_back(repo_path, service=service, branch=branch, to=to, message=message)
    except PlumbError as error:
        fail(error)
        return
    old = "(none)" if done.old_value is None else done.old_value
    click.echo(f"{done.path}: spec.version {old} -> {done.new_value}")
    click.echo(f"{done.service}: {done.current} -> {done.target}")
    click.echo(f"committed {done.commit[:12]} on {done.branch}")


def roll_back(path: Path, *, service: str, branch: str, to: str | None, message: str | None) -> Rollback:
    """Write the rollback commit of `service` on `branch` of the repository at `path`."""
    repo = open_repository(path)
    ref = f"refs/heads/{branch}"
    tip = _tip(repo, ref)
    model = _model(repo, tip)
    current, target = choose_versions(model, service=service, to=to)
    file_path = model.services[service].doc.path
    entry = repo[tip].peel(pygit2.Commit).tree[file_path]
    text = repo[entry.id].peel(pygit2.Blob).data.decode("utf-8")
    edited, old_value, new_value = set_version(text, service=service, version=target)
    with _working_copy(repo, ref, file_path) as checked_out:
        data = edited.encode("utf-8")
        commit = _commit(repo, tip, file_path, data, _message(service, current, target, old_value, message))
        _move(repo, ref, tip, commit)
        checked_out(data)
    return Rollback(service, file_path, current, target, old_value, new_value, commit, branch)


def choose_versions(model: Model, *, service: str, to: str | None) -> tuple[str, str]:
    """The version `service` resolves to and the one to pin: `to`, else the highest Release below."""
    if service not in model.services:
        known = ", ".join(sorted(model.services)) or "none"
        raise UsageError(f"no Service {service!r} on this branch (services: {known})")
    resolved = model.versions.get(service)
    if resolved is None:
        raise UsageError(f"service {service!r} resolves to no Release; there is nothing to roll back")
    versions = sorted(_version(r.version) for r in model.releases.values() if r.service == service)
    current = _version(resolved.version)
    if to is not None:
        return resolved.version, _given(service, to, versions, current)
    earlier = [v for v in versions if v < current]
    if not earlier:
        raise UsageError(f"{service} runs {current}, its earliest Release; nothing earlier to roll back to")
    return resolved.version, str(earlier[-1])


def _given(service: str, to: str, versions: Sequence[Version], current: Version) -> str:
    wanted = _parse(to)
    if wanted not in versions:
        known = ", ".join(str(v) for v in versions)
        raise UsageError(f"{service} has no Release {to} (Releases: {known})")
    if wanted == current:
        raise UsageError(f"{service} already resolves to {current}")
    return str(wanted)


def _parse(text: str) -> Version:
    try:
        return Version.parse(text)
    except RangeError as exc:
        raise UsageError(f"--to {text!r}: {exc}") from exc


def _version(text: str) -> Version:
    """A Release's version, schema-valid so always parseable."""
    return Version.parse(text)


def _tip(repo: pygit2.Repository, ref: str) -> str:
    reference = repo.references.get(ref)
    if reference is None:
        raise UsageError(f"no branch {ref.removeprefix('refs/heads/')!r} in {repo.path}")
    return str(reference.peel(pygit2.Commit).id)


def _model(repo: pygit2.Repository, tip: str) -> Model:
    _, files = read_commit_files(repo, tip, cache=SourceCache())
    model = compile_desired(files).model
    if model is None:
        raise UsageError(f"the desired state at {tip[:12]} cannot be read")
    return model


def set_version(text: str, *, service: str, version: str) -> tuple[str, str | None, str]:
    """`text` with the Service's `spec.version` set to `version`, touching only that value.

    Returns the new text, the value as it was written (None when absent) and as it is written now.
    The existing value keeps its quoting; an added key goes first in `spec`, indented like its keys.
    """
    spec = _spec_node(text, service)
    for key, value in spec.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "version":
            return _replace_value(text, key, value, version)
    first = spec.value[0][0].start_mark
    new = _scalar(version, '"')
    newline = "\r\n" if "\r\n" in text else "\n"
    insert = f"version: {new}, " if spec.flow_style else f"version: {new}{newline}{' ' * first.column}"
    return text[: first.index] + insert + text[first.index :], None, new


def _replace_value(text: str, key: yaml.Node, value: yaml.Node, version: str) -> tuple[str, str, str]:
    start, end = value.start_mark.index, value.end_mark.index
    if not isinstance(value, yaml.ScalarNode) or start < key.end_mark.index:
        raise UsageError(
            "spec.version is not a plain value written after its key (an alias?); edit it by hand"
        )
    new = _scalar(version, value.style)
    return text[:start] + new + text[end:], text[start:end], new


def _scalar(version: str, style: str | None) -> str:
    if style in ("'", '"'):
        return f"{style}{version}{style}"
    return version


def _spec_node(text: str, service: str) -> yaml.MappingNode:
    """The `spec` mapping of the document of kind Service named `service`."""
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise UsageError(f"cannot parse the file of service {service!r}: {exc}") from exc
    for document in documents:
        fields = _fields(document)
        metadata = fields.get("metadata")
        if _text(fields.get("kind")) == "Service" and _text(_fields(metadata).get("name")) == service:
            spec = fields.get("spec")
            if isinstance(spec, yaml.MappingNode) and spec.value:
                return spec
    raise UsageError(f"no Service {service!r} with a spec mapping in its file")


def _fields(node: yaml.Node | None) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _text(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _message(service: str, current: str, target: str, old_value: str | None, why: str | None) -> str:
    body = f"{why.strip()}\n\n" if why and why.strip() else ""
    old = old_value if old_value is not None else "(none)"
    return (
        f"Roll back {service} from {current} to {target}\n\n{body}"
        f"Written by `plumb rollback {service}`: spec.version {old} -> {target}.\n"
        f"Revert this commit to go forward again.\n\n"
        f"Plumb-Rollback: {service} {current} -> {target}\n"
    )


def _commit(repo: pygit2.Repository, tip: str, path: str, data: bytes, message: str) -> str:
    parent = repo[tip].peel(pygit2.Commit)
    tree = _replace(repo, parent.tree, path.split("/"), repo.create_blob(data))
    author = _author(repo)
    return str(repo.create_commit(None, author, author, message, tree, [parent.id]))


def _replace(repo: pygit2.Repository, tree: pygit2.Tree, parts: list[str], blob: pygit2.Oid) -> pygit2.Oid:
    """`tree` with the blob at `parts` replaced, every other entry (and its mode) kept."""
    builder = repo.TreeBuilder(tree)
    entry = tree[parts[0]]
    if len(parts) == 1:
        builder.insert(parts[0], blob, entry.filemode)
    else:
        subtree = repo[entry.id].peel(pygit2.Tree)
        builder.insert(parts[0], _replace(repo, subtree, parts[1:], blob), pygit2.GIT_FILEMODE_TREE)
    return builder.write()


def _author(repo: pygit2.Repository) -> pygit2.Signature:
    """From git config (user.name, user.email), else Plumb <plumb@localhost>."""
    try:
        signature: pygit2.Signature = repo.default_signature
    except (KeyError, pygit2.GitError):
        return pygit2.Signature(*DEFAULT_AUTHOR)
    return signature


def _move(repo: pygit2.Repository, ref: str, tip: str, commit: str) -> None:
    try:
        compare_and_swap(Path(repo.path), ref, old=tip, new=commit)
    except PushRejected as exc:
        raise UsageError(
            f"{ref.removeprefix('refs/heads/')} moved while the rollback was written ({exc}); run it again"
        ) from exc


@contextlib.contextmanager
def _working_copy(repo: pygit2.Repository, ref: str, path: str) -> Iterator[Callable[[bytes], None]]:
    """When `ref` is checked out, refuse local changes to `path` first and update it after the commit."""
    checked_out = not repo.is_bare and not repo.head_is_unborn and repo.head.name == ref
    if not checked_out:
        yield lambda data: None
        return
    if repo.status_file(path) != pygit2.GIT_STATUS_CURRENT:
        raise UsageError(f"{path} has uncommitted changes in {repo.workdir}; commit or stash them first")

    def update(data: bytes) -> None:
        full = Path(repo.workdir) / path
        temporary = full.with_name(f".{full.name}.plumb-rollback")
        temporary.write_bytes(data)
        os.chmod(temporary, full.stat().st_mode)
        os.replace(temporary, full)
        repo.index.read()
        repo.index.add(path)
        repo.index.write()

    yield update
