"""Bare git repositories with tags and branches, standing in for GitHub upstreams."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Upstream", "GIT_AUTHOR_EMAIL": "upstream@example.invalid",
    "GIT_COMMITTER_NAME": "Upstream", "GIT_COMMITTER_EMAIL": "upstream@example.invalid",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


@dataclass
class UpstreamRepo:
    """A bare repo (what clients clone) plus a work tree used to publish commits into it."""

    bare: Path
    work: Path
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, files: dict[str, str], message: str, tag: str | None = None, branch: str = "main") -> str:
        for name, content in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        sha = git("rev-parse", "HEAD", cwd=self.work)
        if tag:
            git("tag", "-a", tag, "-m", tag, cwd=self.work)
            self.tags[tag] = sha
        git("push", "-q", "--tags", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return sha


def make_upstream(base: Path, name: str) -> UpstreamRepo:
    bare = base / f"{name}.git"
    work = base / f"{name}-work"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    git("init", "-q", "-b", "main", str(work))
    git("remote", "add", "origin", str(bare), cwd=work)
    return UpstreamRepo(bare, work)
