"""The GPU targets compiled into a CUDA extension, read from its ELF `.nv_fatbin` section.

A CUDA fat binary is a sequence of containers (magic 0xBA55ED50), each holding entries whose header
names the kind (1 = PTX, 2 = SASS/cubin) and the SM number. Only headers are read, so compressed
entries are fine. This tells "the wheel has no kernels for this GPU" apart from other launch errors
without needing a GPU or cuobjdump on the host.
"""

from __future__ import annotations

import struct
from typing import Any

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_SASS = 1, 2


def section(path: str, name: bytes = b".nv_fatbin") -> bytes | None:
    """The bytes of one section of a 64-bit little-endian ELF file, or None when absent."""
    with open(path, "rb") as fh:
        ident = fh.read(64)
        if len(ident) < 64 or ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            return None
        shoff = struct.unpack_from("<Q", ident, 0x28)[0]
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
        fh.seek(shoff)
        table = fh.read(shentsize * shnum)
        headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
        if shstrndx >= len(headers):
            return None
        names_off, names_size = headers[shstrndx][4], headers[shstrndx][5]
        fh.seek(names_off)
        names = fh.read(names_size)
        for sh_name, _type, _flags, _addr, offset, size in headers:
            end = names.find(b"\0", sh_name)
            if names[sh_name:end] == name:
                fh.seek(offset)
                return fh.read(size)
    return None


def targets(blob: bytes) -> dict[str, list[str]]:
    """{'sass': ['sm_80', ...], 'ptx': ['sm_90', ...]} found in a fat binary section."""
    sass: set[int] = set()
    ptx: set[int] = set()
    offset = 0
    while offset + 16 <= len(blob):
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", blob, offset)
        if magic != FATBIN_MAGIC:
            offset += 8  # containers are 8-byte aligned; skip padding between them
            continue
        entry = offset + header_size
        end = min(entry + fat_size, len(blob))
        while entry + 32 <= end:
            kind, _unknown, entry_header, payload = struct.unpack_from("<HHIQ", blob, entry)
            arch = struct.unpack_from("<I", blob, entry + 28)[0]
            if entry_header == 0:
                break
            if kind == KIND_SASS:
                sass.add(arch)
            elif kind == KIND_PTX:
                ptx.add(arch)
            entry += entry_header + payload
        offset = max(end, offset + 16)
    return {"sass": [f"sm_{a}" for a in sorted(sass)], "ptx": [f"sm_{a}" for a in sorted(ptx)]}


def extension_targets(path: str) -> dict[str, Any]:
    blob = section(path)
    if blob is None:
        return {"sass": [], "ptx": [], "note": f"no .nv_fatbin section in {path}"}
    return dict(targets(blob), path=path)
