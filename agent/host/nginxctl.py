"""Drive nginx: `nginx -t` (with a pure parser of its output) and `nginx -s reload`.

The binary, its main config (-c) and prefix (-p) are options of `plumb-agent run`, so tests and
several agents on one machine can each drive their own nginx master.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from contract.errors import PermanentError, TemporaryError

SITE_DIR = "/etc/nginx/conf.d"
_MESSAGE = re.compile(
    r"\[(?P<level>emerg|alert|crit|error|warn|notice|info)\]\s+(?:\d+#\d+:\s+)?(?P<text>.*?)"
    r"(?: in (?P<file>/\S+?):(?P<line>\d+))?$"
)


@dataclass(frozen=True)
class NginxMessage:
    """One diagnostic from nginx."""

    level: str
    text: str
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class NginxTest:
    """The result of `nginx -t`."""

    ok: bool
    messages: tuple[NginxMessage, ...] = ()

    def summary(self) -> str:
        errors = [m for m in self.messages if m.level in ("emerg", "alert", "crit", "error")]
        shown = errors or list(self.messages)
        return "; ".join(_describe(m) for m in shown) or ("ok" if self.ok else "nginx -t failed")

    def files(self) -> frozenset[str]:
        """Files nginx blamed for errors."""
        return frozenset(m.file for m in self.messages if m.file and m.level in ("emerg", "alert", "crit"))


def _describe(message: NginxMessage) -> str:
    where = f" in {message.file}:{message.line}" if message.file else ""
    return f"[{message.level}] {message.text}{where}"


def parse_test_output(output: str, *, returncode: int) -> NginxTest:
    """Parse what `nginx -t` printed (stderr) and its exit status."""
    messages = []
    for line in output.splitlines():
        found = _MESSAGE.search(line)
        if found:
            number = found.group("line")
            messages.append(
                NginxMessage(
                    found.group("level"),
                    found.group("text"),
                    found.group("file"),
                    int(number) if number else None,
                )
            )
    return NginxTest(returncode == 0, tuple(messages))


@dataclass(frozen=True)
class Nginx:
    """How to reach the nginx this agent manages."""

    binary: str = "/usr/sbin/nginx"
    config: Path | None = None
    prefix: Path | None = None
    site_dir: str = SITE_DIR
    refused: str | None = None  # why this agent may not run nginx at all (e.g. --root without a config)

    def _command(self, *args: str) -> list[str]:
        command = [self.binary]
        if self.prefix is not None:
            command += ["-p", str(self.prefix)]
        if self.config is not None:
            command += ["-c", str(self.config)]
        return command + list(args)

    def available(self) -> bool:
        return self.refused is None and Path(self.binary).is_file()

    def test(self) -> NginxTest:
        """Run `nginx -t` against the files as they are on disk now."""
        result = self._run("-t")
        return parse_test_output(result.stderr, returncode=result.returncode)

    def reload(self) -> None:
        """Ask the running master to reload; TemporaryError if it is not running."""
        result = self._run("-s", "reload")
        if result.returncode != 0:
            raise TemporaryError(
                f"nginx reload failed: {parse_test_output(result.stderr, returncode=1).summary()}"
            )

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self.refused is not None:
            raise PermanentError(self.refused)
        try:
            return subprocess.run(
                self._command(*args), capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TemporaryError(f"cannot run {self.binary}: {exc}") from exc
