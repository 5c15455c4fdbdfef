"""A git checkout at a ref, resolved to a commit; moved HEAD, edits, deletions and untracked files are drift.

Deleted tracked files are restored from HEAD without --force: their content is in the commit, so
nothing of anyone's is lost. Edits and untracked files are someone's work and need --force, except
where every one of them already holds the target commit's content: that is what a checkout killed
half-way leaves (git writes the files first, the index and HEAD last), and finishing it loses nothing.
The lock files of a killed git command (.git/index.lock) are removed once no git process works there.
"""

from __future__ import annotations

import contextlib
import os
import re

from .. import leftovers, procs
from ..fsutil import remove_tree
from ..protocol import Change, Context, ResourceFailure

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

HALF_WRITTEN_LIMIT = 16  # files git writes at once (checkout.workers), cut off by the kill
HALF_WRITTEN_BYTES = 64 << 20
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA = re.compile(r"^[0-9a-f]{7,39}$")


def _git(path: str, *args: str) -> List[str]:
    # safe.directory: the checkout may belong to another user than the one running the agent.
    # Literal pathspecs: a file named '*.py' means that file, not a pattern.
    return ["git", "-c", "safe.directory=" + path, "--literal-pathspecs", "-C", path, *args]


def _out(argv: List[str]) -> Optional[str]:
    done = procs.run(argv)
    return done.output.strip() if done.ok else None


def _ls_remote(repo: str, ref: str) -> Optional[str]:
    """Commit that `ref` names on the remote (branch, tag, peeled annotated tag, or HEAD)."""
    done = procs.run(["git", "ls-remote", "--", repo, ref, "refs/heads/" + ref, "refs/tags/" + ref,
                      "refs/tags/" + ref + "^{}"], timeout=120)
    if not done.ok:
        raise ResourceFailure("cannot read refs from %s (exit %d):\n%s" % (repo, done.returncode, done.tail()))
    refs: Dict[str, str] = {}
    for line in done.output.splitlines():
        sha, _, name = line.partition("\t")
        refs[name.strip()] = sha.strip()
    for name in ("refs/tags/%s^{}" % ref, "refs/tags/" + ref, "refs/heads/" + ref, ref):
        if name in refs:
            return refs[name]
    return None


def resolve_ref(spec: Dict[str, Any], path: str, is_repo: bool) -> Dict[str, Any]:
    """Commit for the spec's ref: a full sha as is; tags locally (tags do not move); branches from the remote."""
    ref = spec.get("ref") or "HEAD"
    if _FULL_SHA.match(ref):
        return {"commit": ref, "how": "commit"}
    if is_repo:
        tag = _out(_git(path, "rev-parse", "--verify", "-q", "refs/tags/%s^{commit}" % ref))
        if tag:
            return {"commit": tag, "how": "tag"}
        if _SHORT_SHA.match(ref):
            short = _out(_git(path, "rev-parse", "--verify", "-q", "%s^{commit}" % ref))
            if short:
                return {"commit": short, "how": "commit"}
    commit = _ls_remote(spec["repo"], ref)
    if commit is None:
        if _SHORT_SHA.match(ref):
            return {"commit": None, "how": "short-sha", "short": ref}
        raise ResourceFailure("ref %r not found in %s; check the tag or branch name" % (ref, spec["repo"]))
    return {"commit": commit, "how": "remote"}


def probe(spec: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    path = ctx.path(spec["path"])
    if not os.path.lexists(path):
        return {"exists": False, "resolved": resolve_ref(spec, path, False)}
    is_repo = os.path.isdir(os.path.join(path, ".git"))
    if not is_repo:
        empty = os.path.isdir(path) and not os.listdir(path)
        return {"exists": True, "is_repo": False, "empty": empty, "resolved": resolve_ref(spec, path, False)}
    # -z: paths come unquoted (spaces, non-ASCII), each entry NUL-terminated.
    status = procs.run(_git(path, "status", "--porcelain=v1", "-z", "--untracked-files=normal"))
    if not status.ok:
        raise ResourceFailure("git status in %s failed:\n%s" % (path, status.tail()))
    modified: List[str] = []
    deleted: List[str] = []
    untracked: List[str] = []
    entries = iter(status.output.split("\0"))
    for line in entries:
        if len(line) < 4:
            continue
        code, entry = line[:2], line[3:]
        if code[0] in "RC":
            next(entries, None)  # a rename or copy is followed by its source path
        if code == "??":
            # Python writes bytecode caches next to a plugin's sources when ComfyUI imports it.
            if not _is_bytecode_cache(entry):
                untracked.append(entry)
        elif code in (" D", "D "):
            # Deleted in the work tree, or with `git rm`: HEAD still holds exactly this content.
            deleted.append(entry)
        else:
            modified.append(entry)
    head = _out(_git(path, "rev-parse", "HEAD"))
    resolved = resolve_ref(spec, path, True)
    return {
        "exists": True, "is_repo": True, "head": head,
        "origin": _out(_git(path, "remote", "get-url", "origin")),
        "modified": modified, "deleted": deleted, "untracked": untracked,
        "resolved": resolved, "stale_locks": _stale_locks(path),
        "half_checked_out": bool(modified or untracked or deleted) and _half_checked_out(path, head,
                                                                                         resolved["commit"]),
    }


def _stale_locks(path: str) -> List[str]:
    """Lock files of git commands that are no longer running (relative to .git): a killed checkout's
    index.lock makes every later git command in the checkout fail."""
    git_dir = os.path.join(path, ".git")
    try:
        locks = [name for name in os.listdir(git_dir) if name.endswith(".lock")]
    except OSError:
        return []
    for folder, _, names in os.walk(os.path.join(git_dir, "refs")):  # not objects/: it is large
        locks += [os.path.relpath(os.path.join(folder, n), git_dir) for n in names if n.endswith(".lock")]
    return sorted(locks) if locks and not _git_running_in(path) else []


def _git_running_in(path: str) -> bool:
    """Whether a git process works in the checkout (git -C sets its working directory there). Without
    /proc nothing can be told, and a lock is never taken for stale."""
    if not os.path.isdir("/proc/self"):
        return True
    real = os.path.realpath(path)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid, encoding="utf-8", errors="replace") as handle:
                if not handle.read().startswith("git"):
                    continue
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if cwd == real or cwd.startswith(real + os.sep):
            return True
    return False


def _half_checked_out(path: str, head: Optional[str], commit: Optional[str]) -> bool:
    """Whether HEAD is still the old commit while every difference holds `commit`'s content: a checkout
    of `commit` killed after it wrote some files (the index is still HEAD's) or after it wrote the index
    too (the index is `commit`'s), before it moved HEAD."""
    if not head or not commit or head == commit or not _has_commit(path, commit):
        return False
    index_is = [procs.run(_git(path, "diff-index", "--cached", "--quiet", rev, "--")).ok for rev in (head, commit)]
    edited = procs.run(_git(path, "diff-files", "--name-only", "-z", "--"))
    new = procs.run(_git(path, "ls-files", "--others", "--exclude-standard", "-z"))
    tree = procs.run(_git(path, "ls-tree", "-r", "-z", "--full-tree", commit))
    if not (any(index_is) and edited.ok and new.ok and tree.ok):
        return False  # something else is staged: someone's work, not a checkout's
    blobs = {}
    for entry in tree.output.split("\0"):
        meta, _, name = entry.partition("\t")
        if meta:
            blobs[name] = meta.split()[2]
    paths = [p for p in (edited.output + "\0" + new.output).split("\0") if p]
    present = [p for p in paths if os.path.lexists(os.path.join(path, p))]
    if any(p not in blobs or os.path.islink(os.path.join(path, p)) for p in present):
        return False
    unequal = []
    for start in range(0, len(present), 500):
        chunk = present[start:start + 500]
        hashed = procs.run(_git(path, "hash-object", "--", *chunk))
        if not hashed.ok or len(hashed.output.split()) != len(chunk):
            return False
        shas = hashed.output.split()
        unequal += [name for i, name in enumerate(chunk) if shas[i] != blobs[name]]
    # The files git was writing when it was killed hold the start of their new content.
    return len(unequal) <= HALF_WRITTEN_LIMIT and all(_starts(path, p, blobs[p]) for p in unequal)


def _starts(path: str, name: str, blob: str) -> bool:
    """Whether the work tree's `name` is a beginning of the blob's content (a file cut off while written)."""
    import subprocess

    try:
        with open(os.path.join(path, name), "rb") as handle:
            have = handle.read(HALF_WRITTEN_BYTES + 1)
    except OSError:
        return False
    if len(have) > HALF_WRITTEN_BYTES:
        return False
    done = subprocess.run(_git(path, "cat-file", "blob", blob), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          stdin=subprocess.DEVNULL)
    return done.returncode == 0 and len(have) < len(done.stdout) and done.stdout.startswith(have)


def _is_bytecode_cache(entry: str) -> bool:
    return entry.rstrip("/").endswith("__pycache__") or entry.endswith((".pyc", ".pyo"))


def _short(sha: Optional[str]) -> Optional[str]:
    return sha[:12] if sha else sha


def _listing(paths: List[str]) -> str:
    shown = ", ".join(paths[:5])
    return shown + (" and %d more" % (len(paths) - 5) if len(paths) > 5 else "")


def diff(spec: Dict[str, Any], observed: Dict[str, Any], ctx: Context) -> List[Change]:
    resolved = observed["resolved"]
    target = resolved["commit"] or resolved.get("short")
    label = "%s (%s)" % (spec.get("ref"), _short(target)) if spec.get("ref") != target else _short(target)
    if not observed["exists"] or not observed["is_repo"]:
        into = "" if not observed["exists"] or observed["empty"] else " into the existing folder"
        return [Change("checkout", None, label, "clone %s at %s%s" % (spec["repo"], label, into), "create")]
    changes = []
    if observed["origin"] != spec["repo"]:
        changes.append(Change("origin", observed["origin"], spec["repo"], "remote origin points elsewhere"))
    head = observed["head"]
    if (resolved["commit"] and head != resolved["commit"]) or (not resolved["commit"] and not (
            head or "").startswith(resolved.get("short", ""))):
        changes.append(Change("HEAD", _short(head), label, "HEAD is at %s, want %s" % (_short(head), label)))
    if observed.get("stale_locks"):
        listing = _listing([".git/" + lock for lock in observed["stale_locks"]])
        changes.append(Change("locks", listing, None, "left by a git command that was killed: %s (removed)" % listing))
    if observed.get("half_checked_out"):
        count = len(observed["modified"]) + len(observed["untracked"]) + len(observed["deleted"])
        changes.append(Change("checkout", "interrupted", label, "a checkout of %s was interrupted (%d entries already "
                              "hold its content); it is finished" % (label, count)))
        return changes
    if observed["modified"]:
        changes.append(Change("modified", _listing(observed["modified"]), None,
                              "local modifications: %s" % _listing(observed["modified"]), "discard"))
    if observed["deleted"]:
        listing = _listing(observed["deleted"])
        changes.append(Change("deleted", listing, None,
                              "tracked files deleted: %s (apply restores them from HEAD)" % listing))
    if observed["untracked"]:
        changes.append(Change("untracked", _listing(observed["untracked"]), None,
                              "untracked files: %s" % _listing(observed["untracked"]), "discard"))
    return changes


def apply(spec: Dict[str, Any], observed: Dict[str, Any], changes: List[Change], ctx: Context) -> None:
    path = ctx.owned_path(spec["path"])
    resolved = observed["resolved"]
    target = resolved["commit"] or resolved["short"]
    if not observed["exists"] or not observed["is_repo"]:
        _clone(spec["repo"], target, path, ctx)
        return
    for lock in observed.get("stale_locks") or []:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, ".git", lock))
    if observed.get("half_checked_out"):
        # -f only over what the interrupted checkout of this very commit wrote (see _half_checked_out).
        procs.check(_git(path, "-c", "advice.detachedHead=false", "checkout", "-q", "-f", "--detach", target, "--"),
                    "git checkout of %s in %s" % (target, path))
        return
    dirty = [c for c in changes if c["field"] in ("modified", "untracked")]
    if dirty and not (ctx.force or spec.get("force")):
        raise ResourceFailure(
            "%s has %s; re-run with --force to discard them (or commit them elsewhere first)"
            % (spec["path"], " and ".join(c["reason"] for c in dirty)))
    if any(c["field"] == "origin" for c in changes):
        procs.check(_git(path, "remote", "set-url", "origin", spec["repo"]), "git remote set-url")
    if not _has_commit(path, target):
        procs.check(_git(path, "fetch", "--tags", "--force", "origin"), "git fetch in %s" % path, timeout=3600)
        if not _has_commit(path, target):
            procs.check(_git(path, "fetch", "origin", target), "git fetch of %s" % target, timeout=3600)
    if observed["deleted"] and not dirty:
        # Back from HEAD before HEAD moves, so the checkout does not carry the deletion along.
        procs.check(_git(path, "checkout", "-q", "HEAD", "--", *observed["deleted"]),
                    "git checkout of the deleted files in %s" % path)
    if dirty:
        procs.check(_git(path, "reset", "--hard", "-q"), "git reset in %s" % path)
        # -d but not -x: ignored files (models, caches, outputs) are the user's data, not drift.
        procs.check(_git(path, "clean", "-fdq"), "git clean in %s" % path)
    procs.check(_git(path, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", target, "--"),
                "git checkout of %s in %s" % (target, path))


def _has_commit(path: str, commit: str) -> bool:
    return procs.run(_git(path, "cat-file", "-e", commit + "^{commit}")).ok


def _clone(repo: str, commit: str, path: str, ctx: Context) -> None:
    """Clone into a staging folder beside the target and rename it in place once checked out."""
    staging = leftovers.staging_path(path)
    if os.path.islink(staging):
        os.unlink(staging)  # a planted link: git would clone through it, wherever it points
    remove_tree(staging)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        procs.check(["git", "clone", "-q", "--no-checkout", "--", repo, staging], "git clone of %s" % repo,
                    timeout=3600, stream=ctx.verbose)
        if not _has_commit(staging, commit):
            procs.check(_git(staging, "fetch", "-q", "origin", commit), "git fetch of %s" % commit, timeout=3600)
        if os.path.isdir(path) and os.listdir(path):
            _check_out_into(staging, path, commit)
            return
        procs.check(_git(staging, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit, "--"),
                    "git checkout of %s" % commit)
        if os.path.isdir(path):
            os.rmdir(path)  # an empty placeholder directory
        os.rename(staging, path)
    except BaseException:
        remove_tree(staging)
        raise


def _check_out_into(staging: str, path: str, commit: str) -> None:
    """Turn an existing folder (e.g. ComfyUI/ already holding models/) into the checkout.

    git refuses to overwrite a file that is in the way, so nothing of the user's is lost; such a
    conflict fails with git's list of the files and leaves the folder as it was.
    """
    if os.path.exists(os.path.join(path, ".git")):
        raise ResourceFailure("%s already has a .git entry; move it away first" % path)
    os.rename(os.path.join(staging, ".git"), os.path.join(path, ".git"))
    done = procs.run(_git(path, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit, "--"))
    if not done.ok:
        remove_tree(os.path.join(path, ".git"))
        raise ResourceFailure("cannot check out %s into the existing folder %s (files are in the way):\n%s"
                              % (commit[:12], path, done.tail()))
    remove_tree(staging)
