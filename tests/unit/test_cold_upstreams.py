"""The cold bench's stand-in upstreams answer like the Hub and a PEP 503 index where clients depend on it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path

from bench.cold_upstreams import HubFile, Throttle, Upstreams, make_model_file, one_commit_mirror, project_of, serve


def _upstreams(tmp_path: Path) -> Upstreams:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "Demo_Pkg-1.0-py3-none-any.whl").write_bytes(b"wheel bytes")
    (wheels / "other.pkg-2.0.tar.gz").write_bytes(b"sdist bytes")
    models = tmp_path / "models"
    sha = make_model_file(models / "org" / "repo" / "split" / "m.safetensors", 3000)
    return Upstreams(wheels, models, [HubFile("org/repo", "split/m.safetensors", 3000, sha)], Throttle(50e6))


def test_index_pages_name_files_by_normalized_project(tmp_path: Path) -> None:
    up = _upstreams(tmp_path)
    assert project_of("Demo_Pkg-1.0-py3-none-any.whl") == "demo-pkg"
    assert project_of("other.pkg-2.0.tar.gz") == "other-pkg"
    with serve(up) as base:
        page = urllib.request.urlopen(f"{base}/simple/demo-pkg/").read().decode()
        wheel = urllib.request.urlopen(f"{base}/files/Demo_Pkg-1.0-py3-none-any.whl").read()
    assert f"#sha256={hashlib.sha256(b'wheel bytes').hexdigest()}" in page
    assert wheel == b"wheel bytes"
    assert up.archives == {"Demo_Pkg-1.0-py3-none-any.whl": len(b"wheel bytes")}


def test_hub_answers_head_range_and_api_like_the_hub(tmp_path: Path) -> None:
    up = _upstreams(tmp_path)
    sha = up.hub_files[0].sha256
    with serve(up) as base:
        url = f"{base}/hf/org/repo/resolve/main/split/m.safetensors"
        head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))
        ranged = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=1000-"}))
        body = ranged.read()
        info = json.loads(urllib.request.urlopen(f"{base}/hf/api/models/org/repo/revision/main?blobs=true").read())
        try:
            urllib.request.urlopen(f"{base}/hf/org/repo/resolve/main/absent.bin")
            missing = 200
        except urllib.error.HTTPError as exc:
            missing = exc.code
    assert head.headers["X-Linked-Etag"] == f'"{sha}"' and head.headers["X-Linked-Size"] == "3000"
    assert head.headers["X-Repo-Commit"] == info["sha"]
    assert ranged.status == 206 and ranged.headers["Content-Range"] == "bytes 1000-2999/3000"
    assert body == bytes(2000)
    (sibling,) = info["siblings"]
    assert sibling["rfilename"] == "split/m.safetensors" and sibling["size"] == 3000
    assert sibling["lfs"] == {"sha256": sha, "size": 3000, "pointerSize": 134}
    assert missing == 404
    assert up.served_bytes == 2000


def test_one_commit_mirror_replaces_missing_blobs(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshot.git"
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    (work / "kept.txt").write_text("kept\n")
    (work / "lost.json").write_text('{"big": true}\n')
    subprocess.run(["git", "-C", str(work), "add", "."], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"],
                   check=True)
    commit = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(snapshot)], check=True)
    lost = subprocess.run(["git", "-C", str(snapshot), "rev-parse", "HEAD:lost.json"], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["git", "-C", str(snapshot), "repack", "-a", "-d", "-q"], check=True)
    # Drop the blob the way the real snapshot lacks one: unpack everything but it.
    pack = next((snapshot / "objects" / "pack").glob("*.pack"))
    data = pack.read_bytes()
    for stale in (snapshot / "objects" / "pack").iterdir():
        stale.unlink()
    subprocess.run(["git", "-C", str(snapshot), "unpack-objects", "-q"], input=data, check=True)
    (snapshot / "objects" / lost[:2] / lost[2:]).unlink()

    made = one_commit_mirror(snapshot, commit, "v1.0", tmp_path / "mirror" / "Org" / "Repo")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--branch", "v1.0", f"file://{tmp_path / 'mirror' / 'Org' / 'Repo'}",
                    str(clone)], check=True)
    assert (clone / "kept.txt").read_text() == "kept\n"
    placeholder = json.loads((clone / "lost.json").read_text())
    assert placeholder == {"placeholder": True, "missing_blob": lost, "upstream_commit": commit}
    assert subprocess.run(["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip() == made
