"""`plumb bootstrap`'s steps on a host over SSH: check, install, enroll, deploy key, configure, start.

Each step looks first and acts only on a difference, so a second run changes nothing and keeps the
keys; a failure names its step and leaves what earlier steps did, which the next run reuses.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from contract import __version__
from contract.errors import PlumbError, UsageError
from reconciler.drivers.ssh import Host

AGENT_HOME = "/opt/plumb-agent"
STATE_DIR = "/var/lib/plumb-agent"
ETC = "/etc/plumb"
UNIT = "/etc/systemd/system/plumb-agent.service"
MIN_FREE_KB = 300_000
AGENT = f"{AGENT_HOME}/bin/plumb-agent"


class StepFailed(PlumbError):
    """A bootstrap step failed; the message names it."""


@dataclass(frozen=True)
class Request:
    """What to install and configure on the host."""

    node: str
    repo_url: str
    reconciler_key: str
    interval: str = "15s"
    wheel: Path | None = None
    wheelhouse: Path | None = None
    git_known_hosts: str = ""


@dataclass(frozen=True)
class Step:
    name: str
    outcome: str  # "ok" | "done" | "unchanged" | "would do"
    detail: str


@dataclass
class Enrolled:
    """What the operator needs from the host: its keys, and the deploy key to register."""

    signing: str = ""
    sealing: str = ""
    deploy_key: str = ""
    steps: list[Step] = field(default_factory=list)


def bootstrap(
    host: Host, request: Request, *, dry_run: bool = False, progress: Callable[[Step], None] = lambda _: None
) -> Enrolled:
    """Run every step in order; StepFailed names the one that failed."""
    enrolled = Enrolled()

    def record(name: str, outcome: str, detail: str) -> None:
        step = Step(name, outcome, detail)
        enrolled.steps.append(step)
        progress(step)

    steps: Sequence[tuple[str, Callable[[Host, Request, bool, Enrolled], tuple[str, str]]]] = (
        ("check", _check),
        ("install", _install),
        ("enroll", _enroll),
        ("deploy key", _deploy_key),
        ("configure", _configure),
        ("service", _service),
    )
    for name, action in steps:
        try:
            outcome, detail = action(host, request, dry_run, enrolled)
        except (PlumbError, OSError) as exc:
            raise StepFailed(f"step {name!r} failed: {exc}") from exc
        record(name, outcome, detail)
    return enrolled


def _check(host: Host, _request: Request, _dry: bool, _found: Enrolled) -> tuple[str, str]:
    version = host.run("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'", check=False)
    if version.status != 0:
        raise UsageError(
            f"{host.target.host} has no python3; install Python 3.11 or newer (apt-get install python3)"
        )
    major, minor = (int(p) for p in version.output.strip().split("."))
    if (major, minor) < (3, 11):
        raise UsageError(f"{host.target.host} has Python {major}.{minor}; Plumb needs 3.11 or newer")
    if host.run("python3 -c 'import venv, ensurepip'", check=False).status != 0:
        raise UsageError(f"{host.target.host} cannot make a virtualenv; apt-get install python3-venv")
    init = host.run("cat /proc/1/comm").output.strip()
    if init != "systemd":
        raise UsageError(
            f"{host.target.host}: PID 1 is {init!r}, not systemd; the agent runs as a systemd service"
        )
    free = host.run("df -Pk /opt | awk 'NR==2 {print $4}'").output.strip()
    if free.isdigit() and int(free) < MIN_FREE_KB:
        raise UsageError(
            f"{host.target.host}: {int(free) // 1024} MB free on /opt, {MIN_FREE_KB // 1024} MB needed"
        )
    return (
        "ok",
        f"Python {major}.{minor}, systemd as PID 1, {int(free) // 1024 if free.isdigit() else '?'} MB free",
    )


def _install(host: Host, request: Request, dry: bool, _found: Enrolled) -> tuple[str, str]:
    have = host.run(f"{AGENT} --version", check=False)
    if have.status == 0 and __version__ in have.output:
        return "unchanged", f"plumb-agent {__version__} in {AGENT_HOME}"
    if dry:
        return "would do", f"install plumb-agent {__version__} into {AGENT_HOME}"
    host.run(f"test -x {AGENT_HOME}/bin/pip || python3 -m venv {AGENT_HOME}")
    pip = f"{AGENT_HOME}/bin/pip install --quiet --disable-pip-version-check"
    if request.wheel is None:
        host.run(f"{pip} plumb-gitops=={__version__}")
        return "done", f"plumb-agent {__version__} from the package index"
    staging = f"{STATE_DIR}/install"
    files = [request.wheel, *(sorted(request.wheelhouse.glob("*.whl")) if request.wheelhouse else [])]
    for path in files:
        host.put(path.read_bytes(), f"{staging}/{path.name}")
    links = f"--no-index --find-links {staging}" if request.wheelhouse else ""
    host.run(f"{pip} {links} {staging}/{request.wheel.name}")
    host.run(f"rm -rf {staging}")
    return "done", f"plumb-agent {__version__} from {request.wheel.name}"


def _enroll(host: Host, request: Request, dry: bool, found: Enrolled) -> tuple[str, str]:
    """The node's keys: made unless they exist (enroll keeps them), and their public halves read."""
    existed = host.run(f"test -f {STATE_DIR}/signing.key", check=False).status == 0
    if dry:
        return (
            ("unchanged", f"keys kept in {STATE_DIR}")
            if existed
            else ("would do", f"create keys in {STATE_DIR}")
        )
    printed = host.run(f"{AGENT} enroll --node {shlex.quote(request.node)} --state-dir {STATE_DIR}").output
    found.signing, found.sealing = _keys(printed)
    return ("unchanged", f"keys kept in {STATE_DIR}") if existed else ("done", f"keys created in {STATE_DIR}")


def _deploy_key(host: Host, request: Request, dry: bool, found: Enrolled) -> tuple[str, str]:
    existed = host.run(f"test -f {ETC}/deploy_key", check=False).status == 0
    if dry:
        return (
            ("unchanged", f"{ETC}/deploy_key kept") if existed else ("would do", f"create {ETC}/deploy_key")
        )
    if not existed:
        comment = shlex.quote(f"plumb-agent@{request.node}")
        host.run(
            f"install -d -m 700 {ETC} && ssh-keygen -q -t ed25519 -N '' -C {comment} -f {ETC}/deploy_key"
        )
    found.deploy_key = host.run(f"cat {ETC}/deploy_key.pub").output.strip()
    if existed:
        return "unchanged", f"{ETC}/deploy_key kept"
    return "done", f"{ETC}/deploy_key created: register its public key with the Git server"


def files_for(request: Request) -> Mapping[str, tuple[str, int]]:
    """The agent's configuration files: path -> (content, mode)."""
    env = f"PLUMB_REPO={request.repo_url}\nPLUMB_NODE={request.node}\nPLUMB_INTERVAL={request.interval}\n"
    return {
        f"{ETC}/agent.env": (env, 0o644),
        f"{ETC}/reconciler.pub": (request.reconciler_key + "\n", 0o644),
        f"{ETC}/known_hosts": (request.git_known_hosts, 0o644),
    }


def _configure(host: Host, request: Request, dry: bool, _found: Enrolled) -> tuple[str, str]:
    changed = [path for path, (text, _) in files_for(request).items() if _content(host, path) != text]
    if not changed:
        return "unchanged", f"{ETC}/agent.env, reconciler.pub, known_hosts"
    if dry:
        return "would do", "write " + ", ".join(changed)
    for path in changed:
        text, mode = files_for(request)[path]
        host.put(text.encode(), path, mode=mode)
    return "done", "wrote " + ", ".join(changed)


def _service(host: Host, _request: Request, dry: bool, _found: Enrolled) -> tuple[str, str]:
    printed = host.run(f"{AGENT} service-file", check=not dry)
    if printed.status != 0:  # a dry run on a host without the agent yet
        return "would do", "install, enable and start plumb-agent.service"
    unit = printed.output
    fresh = _content(host, UNIT) != unit
    active = host.run("systemctl is-active plumb-agent.service", check=False).output.strip() == "active"
    if not fresh and active:
        return "unchanged", "plumb-agent.service enabled and running"
    if dry:
        return "would do", "install, enable and start plumb-agent.service"
    if fresh:
        host.put(unit.encode(), UNIT)
        host.run("systemctl daemon-reload")
    host.run("systemctl enable --quiet plumb-agent.service && systemctl restart plumb-agent.service")
    return "done", "plumb-agent.service enabled and started"


def _content(host: Host, path: str) -> str | None:
    found = host.run(f"cat {shlex.quote(path)}", check=False)
    return found.output if found.status == 0 else None


def _keys(text: str) -> tuple[str, str]:
    signing = re.search(r"signing: (\S+)", text)
    sealing = re.search(r"sealing: (\S+)", text)
    if signing is None or sealing is None:
        raise StepFailed(f"step 'enroll' failed: plumb-agent enroll printed no keys: {text.strip()[:200]}")
    return signing.group(1), sealing.group(1)


def node_document(node: str, *, address: str, labels: Mapping[str, str], signing: str, sealing: str) -> str:
    """nodes/NAME.yaml for the desired state."""
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(labels.items()))
    return (
        f"# Written by plumb bootstrap: {node}'s address, labels and the keys its agent enrolled.\n"
        f"apiVersion: plumb/v1\nkind: Node\nmetadata:\n  name: {node}\n  labels: {{{shown}}}\n"
        f"spec:\n  address: {address}\n  keys:\n    signing: {signing}\n    sealing: {sealing}\n"
    )
