"""The record that says which build a wheel file is: written next to the wheel as `<wheel>.build.json` by
the host's wheel_build kind after a build, and by the controller when it pushes a cached wheel. The
wheel_build probe accepts the wheel at its path only when this record names the resource's build_key and
the file's sha256 matches the record.

    {"format": 1, "project": "nunchaku", "build_key": "<64 hex>", "filename": "<wheel file name>",
     "sha256": "<64 hex>", "size": <bytes>, "origin": "built" | "pushed"}

One writer and one reader, here, for both sides (stdlib only: it runs on the host too).
"""

from __future__ import annotations

import json
import os

from .fsutil import atomic_write

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Optional

RECORD_SUFFIX = ".build.json"
FORMAT = 1
_HEX = set("0123456789abcdef")


def record_path(wheel_path: str) -> str:
    return wheel_path + RECORD_SUFFIX


def make_record(project: str, build_key: str, filename: str, sha256: str, size: int, origin: str) -> Dict[str, Any]:
    return {"format": FORMAT, "project": project, "build_key": build_key, "filename": filename, "sha256": sha256,
            "size": size, "origin": origin}


def encode_record(record: Dict[str, Any]) -> bytes:
    return (json.dumps(record, sort_keys=True, indent=1) + "\n").encode("utf-8")


def write_record(wheel_path: str, record: Dict[str, Any]) -> None:
    """Atomically, after the wheel itself is in place: a wheel without its record is never taken as built."""
    atomic_write(record_path(wheel_path), encode_record(record), 0o644)


def parse_record(data: bytes) -> Optional[Dict[str, Any]]:
    """The record, or None when the bytes are not one (a partial copy, another format, a hand-made file)."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    for key in ("build_key", "sha256"):
        value = record.get(key)
        if not isinstance(value, str) or len(value) != 64 or not set(value) <= _HEX:
            return None
    if not isinstance(record.get("filename"), str) or not isinstance(record.get("size"), int):
        return None
    return record


def read_record(wheel_path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(record_path(wheel_path), "rb") as handle:
            return parse_record(handle.read(1 << 16))
    except OSError:
        return None


def record_accepts(record: Optional[Dict[str, Any]], build_key: str, wheel_path: str, sha256: str) -> bool:
    """Whether the wheel at `wheel_path` (whose sha256 the caller computed) is the build `build_key` names."""
    return (record is not None and record.get("build_key") == build_key and record.get("sha256") == sha256
            and record.get("filename") == os.path.basename(wheel_path))
