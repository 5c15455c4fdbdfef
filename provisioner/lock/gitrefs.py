"""Resolve a git ref to the commit it names on a remote, with `git ls-remote` (no clone)."""

from __future__ import annotations

import os
import re
import subprocess

from provisioner.lock.errors import LockError

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
TIMEOUT = 120.0


def remote_commit(url: str, ref: str, field: str) -> str:
    """The commit `ref` names at `url`: a tag's peeled commit, else a branch's head; a commit stays as is.

    `field` (e.g. `comfyui.ref`) is named in errors so the user knows what to change.
    """
    if _COMMIT.match(ref):
        return ref
    if url.startswith("-"):
        raise LockError(f"{field}: {url!r} is not a repository URL")
    refs = _ls_remote(url, ref, field)
    # A tag wins over a branch of the same name, as in `git checkout`; annotated tags are peeled
    # (`^{}`) so the lock pins the commit, not the tag object.
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in refs:
            return refs[name]
    raise LockError(
        f"{field}: {ref!r} is neither a tag nor a branch of {url}; "
        "use an existing tag, branch or full commit"
    )


def _ls_remote(url: str, ref: str, field: str) -> dict[str, str]:
    # No terminal prompts: a private repo must fail here instead of waiting for a password.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        # Patterns match from the end of the ref name; the peeled line of an annotated tag only
        # shows up when asked for by its own `^{}` name.
        done = subprocess.run(["git", "ls-remote", url, ref, f"{ref}^{{}}"], capture_output=True, text=True, env=env,
                              timeout=TIMEOUT, check=False)
    except FileNotFoundError:
        raise LockError("git is not installed on the controller; install it to lock git refs") from None
    except subprocess.TimeoutExpired:
        raise LockError(f"{field}: git ls-remote {url} did not answer in {TIMEOUT:.0f}s; "
                        "check the network, or add a mirror for it in the mirrors file") from None
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise LockError(f"{field}: cannot read refs of {url}: {detail}; "
                        "check the URL and access, or add a mirror for it in the mirrors file")
    refs: dict[str, str] = {}
    for line in done.stdout.splitlines():
        commit, _, name = line.partition("\t")
        if _COMMIT.match(commit):
            refs[name] = commit
    return refs
