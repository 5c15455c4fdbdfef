"""What the benchmarks share: the login user, the other tools' venv, running a tool and checking its no-op."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROVISION = REPO / ".venv" / "bin" / "provision"


@dataclass
class Tool:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    is_noop: Callable[[subprocess.CompletedProcess[str]], bool] = lambda done: done.returncode == 0
    times: list[float] = field(default_factory=list)


def ensure_user(name: str) -> Path:
    """A login user with the distribution's default shell startup, which is empty for non-interactive
    shells. Every tool pays a login shell per SSH session; root's startup on a development machine (pyenv,
    cargo) would add hundreds of milliseconds to each and measure that machine rather than the tools."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
    # useradd leaves the account locked ('!'), and sshd without PAM refuses locked accounts even for keys.
    subprocess.run(["usermod", "-p", "*", name], check=True)
    return Path(pwd.getpwnam(name).pw_dir)


def chown_to(path: Path, user: str) -> None:
    account = pwd.getpwnam(user)
    subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(path)], check=True)


def ensure_tools(venv: Path) -> None:
    """Ansible and pyinfra, in their own venv: never in the project's."""
    if (venv / "bin" / "ansible-playbook").exists() and (venv / "bin" / "pyinfra").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core", "pyinfra"], check=True)


def invoke(tool: Tool, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tool.argv, capture_output=True, text=True, env={**os.environ, **tool.env}, cwd=cwd,
                          timeout=600, check=False)


def converge(tool: Tool, cwd: Path) -> None:
    """Two unmeasured runs: the first converges, the second must already be a no-op."""
    first = invoke(tool, cwd)
    if first.returncode != 0:
        raise SystemExit(f"{tool.name} failed to converge:\n{first.stdout[-3000:]}\n{first.stderr[-3000:]}")
    second = invoke(tool, cwd)
    if not tool.is_noop(second):
        raise SystemExit(f"{tool.name}: the re-apply is not a no-op:\n{second.stdout[-3000:]}\n{second.stderr[-2000:]}")


def pyinfra_unchanged(done: subprocess.CompletedProcess[str]) -> bool:
    text = done.stdout + done.stderr
    return done.returncode == 0 and ("No changes" in text or "Changed: 0" in text)
