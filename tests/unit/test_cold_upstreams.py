"""The cold bench's stand-in upstreams answer like the Hub and a PEP 503 index where clients depend on it."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import urllib.request
import zipfile
from pathlib import Path

from bench.cold_upstreams import HubFile, Throttle, Upstreams, make_model_file, one_commit_mirror, project_of, serve

METADATA = "Metadata-Version: 2.1\nName: Demo_Pkg\nVersion: 1.0\nRequires-Dist: other.pkg\n"


def _upstreams(tmp_path: Path) -> Upstreams:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "Demo_Pkg-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("demo_pkg/__init__.py", "")
        wheel.writestr("Demo_Pkg-1.0.dist-info/METADATA", METADATA)
        wheel.writestr("Demo_Pkg-1.0.dist-info/RECORD", "")
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
        sdist_page = urllib.request.urlopen(f"{base}/simple/other-pkg/").read().decode()
        wheel = urllib.request.urlopen(f"{base}/files/Demo_Pkg-1.0-py3-none-any.whl").read()
    on_disk = (up.wheels / "Demo_Pkg-1.0-py3-none-any.whl").read_bytes()
    assert f"#sha256={hashlib.sha256(on_disk).hexdigest()}" in page
    assert wheel == on_disk
    assert up.archives == {"Demo_Pkg-1.0-py3-none-any.whl": len(on_disk)}
    assert "data-core-metadata" not in sdist_page  # pypi.org serves METADATA for wheels only


def test_wheels_carry_their_metadata_under_pep_714s_name_only(tmp_path: Path) -> None:
    """uv reads METADATA instead of streaming the wheel; pip 23.0 reads the old attribute and then refuses
    a METADATA whose Name is spelled otherwise, so the old name must not be there (as on pypi.org)."""
    up = _upstreams(tmp_path)
    with serve(up) as base:
        page = urllib.request.urlopen(f"{base}/simple/demo-pkg/").read().decode()
        href = re.search(r'href="([^"#]+)', page)
        assert href is not None
        metadata = urllib.request.urlopen(f"{base}{href.group(1)}.metadata").read()
    assert metadata.decode() == METADATA
    assert f'data-core-metadata="sha256={hashlib.sha256(metadata).hexdigest()}"' in page
    assert "data-dist-info-metadata" not in page
    assert up.archives == {}, "reading METADATA is not fetching the wheel"


def test_wheel_ranges_are_answered_exactly(tmp_path: Path) -> None:
    """A resolver reads a wheel's central directory through a suffix range, then the parts it names."""
    up = _upstreams(tmp_path)
    on_disk = (up.wheels / "Demo_Pkg-1.0-py3-none-any.whl").read_bytes()
    size = len(on_disk)
    with serve(up) as base:
        url = f"{base}/files/Demo_Pkg-1.0-py3-none-any.whl"
        tail = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=-22"}))
        middle = urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=10-19"}))
        tail_body, middle_body = tail.read(), middle.read()
    assert tail.status == 206 and tail.headers["Content-Range"] == f"bytes {size - 22}-{size - 1}/{size}"
    assert tail_body == on_disk[-22:]
    assert middle.headers["Content-Range"] == f"bytes 10-19/{size}" and middle_body == on_disk[10:20]


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
