"""nginx sites against a real nginx master on a loopback port, and unit files through systemd-analyze verify."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.apply.resources.base import Host
from agent.apply.resources.units import converge_unit
from agent.apply.runtimes.systemd import SystemdRuntime, verify_unit_file
from agent.host.nginxctl import Nginx
from agent.host.paths import Confinement
from contract.plan import PlanResource
from tests.support import AgentWorld, resource
from tests.support.sshd import free_port

pytestmark = pytest.mark.integration
NGINX = "/usr/sbin/nginx"


@dataclass(frozen=True)
class RunningNginx:
    nginx: Nginx
    port: int

    def get(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as response:
            return str(response.read().decode())

    def serves(self, text: str) -> bool:
        for _ in range(400):
            with contextlib.suppress(OSError):
                if self.get() == text:
                    return True
            time.sleep(0.05)
        return False


def _main_config(prefix: Path, sites: Path) -> Path:
    for name in ("logs", "tmp"):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    temps = "".join(
        f"{kind}_temp_path {prefix}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config.write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\nevents {{ worker_connections 64; }}\n"
        f"http {{\naccess_log off;\n{temps}include {sites}/*.conf;\n}}\n"
    )
    return config


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[RunningNginx]:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    prefix = tmp_path / "nginx"
    sites = tmp_path / "world" / "root" / "etc/nginx/conf.d"
    sites.mkdir(parents=True)
    control = Nginx(binary=NGINX, config=_main_config(prefix, sites), prefix=prefix)
    subprocess.run([NGINX, "-p", str(prefix), "-c", str(control.config)], check=True)
    try:
        yield RunningNginx(control, free_port())
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((prefix / "nginx.pid").read_text()), signal.SIGQUIT)


def site(port: int, body: str, *, extra: str = "") -> dict[str, str]:
    return {
        "site": "shop",
        "content": f"server {{ listen 127.0.0.1:{port}; {extra} location / {{ return 200 '{body}'; }} }}\n",
    }


def test_good_site_is_served_and_bad_site_is_refused(nginx: RunningNginx, tmp_path: Path) -> None:
    """A valid site is written and nginx reloads; a broken one is reverted and nginx keeps serving the old one."""
    world = AgentWorld(tmp_path / "world", nginx=nginx.nginx)
    world.publish([resource("nginx", site(nginx.port, "v1"))])
    assert world.agent().run(once=True).ok
    assert nginx.serves("v1")
    world.publish([resource("nginx", site(nginx.port, "v2", extra="bogus_directive on;"))])
    outcome = world.agent().run(once=True)
    entry = world.report()["resources"][0]
    assert not outcome.ok
    assert entry["outcome"] == "failed" and "bogus_directive" in entry["error"]
    assert "'v1'" in world.path("/etc/nginx/conf.d/shop.conf").read_text()
    assert nginx.get() == "v1"


def test_only_the_broken_site_is_reverted(nginx: RunningNginx, tmp_path: Path) -> None:
    """When nginx blames one site file, the other sites of the same apply still go live."""
    world = AgentWorld(tmp_path / "world", nginx=nginx.nginx)
    good = {
        "site": "good",
        "content": f"server {{ listen 127.0.0.1:{nginx.port}; location / {{ return 200 'good'; }} }}\n",
    }
    bad = {"site": "bad", "content": "server { listen 127.0.0.1:1; nonsense; }\n"}
    world.publish([resource("nginx", good), resource("nginx", bad)])
    world.agent().run(once=True)
    outcomes = {e["id"]: e["outcome"] for e in world.report()["resources"]}
    assert outcomes == {"nginx:good": "changed", "nginx:bad": "failed"}
    assert not world.path("/etc/nginx/conf.d/bad.conf").exists()
    assert nginx.serves("good")


GOOD_UNIT = "[Unit]\nDescription=api\n[Service]\nExecStart=/bin/sleep 3600\nRestart=on-failure\n[Install]\nWantedBy=multi-user.target\n"
BAD_UNITS = [
    ("missing binary", "[Service]\nExecStart=/nonexistent/bin/server\n"),
    ("unknown key", "[Service]\nExecStart=/bin/sleep 1\nFrobnicate=yes\n"),
    ("bad restart", "[Service]\nExecStart=/bin/sleep 1\nRestart=sometimes\n"),
]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize(("name", "content"), BAD_UNITS, ids=[u[0] for u in BAD_UNITS])
def test_systemd_analyze_refuses_bad_units(tmp_path: Path, name: str, content: str) -> None:
    """A unit systemd-analyze complains about is not installed; the previous file stays."""
    root = tmp_path / "root"
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "api.service").write_text(GOOD_UNIT)
    host = Host(
        node="web-1",
        confinement=Confinement.create(root=root, allowed=["/etc/systemd/system"]),
        state_dir=tmp_path / "state",
        runtime=SystemdRuntime(unit_dir=unit_dir),
    )
    spec = {"name": "api.service", "content": content}
    entry = resource("unit", spec)
    with pytest.raises(Exception, match="refused by verification"):
        converge_unit(PlanResource(entry["id"], "unit", "api", spec, entry["digest"]), host)
    assert (unit_dir / "api.service").read_text() == GOOD_UNIT
    assert verify_unit_file(unit_dir / "api.service") is None


def test_site_is_withdrawn_while_nginx_is_down_and_goes_live_when_it_is_back(tmp_path: Path) -> None:
    """A reload that fails puts the site back as it was, so the next apply tests and reloads it again."""
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    prefix, sites = tmp_path / "nginx", tmp_path / "world" / "root" / "etc/nginx/conf.d"
    sites.mkdir(parents=True)
    control = Nginx(binary=NGINX, config=_main_config(prefix, sites), prefix=prefix)
    running = RunningNginx(control, free_port())
    world = AgentWorld(tmp_path / "world", nginx=control)
    world.publish([resource("nginx", site(running.port, "back"))])
    assert not world.agent().run(once=True).ok
    assert world.report()["resources"][0]["outcome"] == "failed"
    assert not world.path("/etc/nginx/conf.d/shop.conf").exists()
    subprocess.run([NGINX, "-p", str(prefix), "-c", str(control.config)], check=True)
    try:
        assert world.agent().run(once=True).ok
        assert running.serves("back")
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((prefix / "nginx.pid").read_text()), signal.SIGQUIT)


def test_agent_killed_before_nginx_test_reverts_a_bad_site_on_restart(
    nginx: RunningNginx, tmp_path: Path
) -> None:
    """Sites written by an apply that died before `nginx -t` are tested at the next start, and reverted if bad."""
    from agent.apply.converge import write_phase

    world = AgentWorld(tmp_path / "world", nginx=nginx.nginx)
    world.publish([resource("nginx", site(nginx.port, "v1"))])
    world.agent().run(once=True)
    assert nginx.serves("v1")
    document = world.publish([resource("nginx", site(nginx.port, "v2", extra="bogus_directive on;"))])
    killed = world.agent()  # what a killed apply leaves: plan and journal saved, sites written, no test
    plan = killed._verify(document)
    killed.state.save("plan", document)
    killed.state.save("journal", {"serial": plan.serial, "digest": plan.digest, "fresh": {}})
    write_phase(plan, killed.host_for(plan))
    assert "bogus_directive" in world.path("/etc/nginx/conf.d/shop.conf").read_text()
    assert not world.agent().run(once=True).ok
    assert "'v1'" in world.path("/etc/nginx/conf.d/shop.conf").read_text()
    assert world.report()["resources"][0]["outcome"] == "failed"
    assert nginx.get() == "v1"


@pytest.mark.parametrize("damage", ["not json", "a directory", "no previous member"])
def test_a_damaged_site_backup_is_dropped_not_fatal(tmp_path: Path, damage: str) -> None:
    """A backup the agent cannot read is not something to revert to: dropped, and nothing raises."""
    from agent.apply.resources.nginx import BACKUP_DIR, backup_of

    host = Host(
        node="web-1",
        confinement=Confinement.create(root=tmp_path / "root", allowed=["/etc/nginx/conf.d"]),
        state_dir=tmp_path / "state",
        runtime=SystemdRuntime(unit_dir=tmp_path / "units"),
    )
    backup = tmp_path / "state" / BACKUP_DIR / "shop.json"
    backup.parent.mkdir(parents=True)
    if damage == "a directory":
        backup.mkdir()
    else:
        backup.write_text("{not json" if damage == "not json" else '{"other": 1}')
    assert backup_of(host, "shop") == (False, None)
    assert not backup.exists()
