"""A seeded corpus of hostile manifests, mutated from the shipped ones: what a stranger's pull request can hold.

Each case is a folder of files (the manifest, the bases it extends) with one mutation applied to one of
them, at the data level (a key deleted, a value of another type, a destructive path, an unknown role...)
or at the byte level (a tag, an alias bomb, deep nesting, bad UTF-8, a surrogate, a truncation...).
The same seed always gives the same corpus, so a failure can be replayed by its case name.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
#: The manifests a case starts from (the fleet inventory is not a manifest) and the facts plan uses for each.
SEEDS = {
    "local.yaml": "nogpu.json", "rtx4090.yaml": "rtx4090.json", "rtx3090.yaml": "rtx3090.json",
    "rtx5090.yaml": "rtx5090.json", "a100.yaml": "a100.json", "t4.yaml": "t4.json", "h100.yaml": "h100.json",
    "docker.yaml": "rtx4090.json",
}
BASE = "base/comfyui-nunchaku.yaml"


@dataclass
class Case:
    name: str
    mutation: str
    files: dict[str, bytes]
    entry: str
    facts: str

    def write(self, directory: Path) -> Path:
        for relative, content in self.files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        return directory / self.entry


def _seed_files() -> dict[str, bytes]:
    # The workflows the seed manifests' checks.workflow names travel with them.
    workflows = {f"workflows/{p.name}": p.read_bytes() for p in sorted((MANIFESTS / "workflows").glob("*.json"))}
    return {**{name: (MANIFESTS / name).read_bytes() for name in SEEDS}, BASE: (MANIFESTS / BASE).read_bytes(),
            **workflows}


# Values of every type and shape, the hostile ones included.
HOSTILE_VALUES: list[Any] = [
    0, -1, 65536, 10**30, 2**63, 1.5, float("inf"), True, None, "", ".", "./", "/", "..", "../../etc/passwd",
    "/etc/shadow", "a" * 200_000, "x\n[Service]\nExecStartPre=/bin/sh -c id", "$(id)", "; rm -rf /",
    "{{ 7 * 7 }}", "{{ undefined_variable }}", "{% for i in range(10) %}", "\t", "é" * 1000, [], {}, [[[[]]]],
    {"kind": "venv", "path": "."}, ["torch>=2", 5, None], {"a": {"b": {"c": None}}}, list(range(2000)),
]

DESTRUCTIVE: list[tuple[tuple[str | int, ...], Any]] = [
    (("target", "root"), ""), (("target", "root"), "/"), (("target", "root"), "  "), (("python", "venv"), "."),
    (("python", "venv"), "./"), (("comfyui", "path"), "."), (("env", "INJECTED"), "a\nB=2"),
    (("env", "INJECTED"), "ends-with\\"), (("env", "INJECTED"), "a\u2028b"), (("target", "port"), 0),
    (("target", "port"), 70000), (("service", "port"), -5), (("service", "port"), "8188x"),
    (("target", "connection"), "ssh://h;id"), (("target", "connect_timeout"), float("inf")),
    (("target", "command_timeout"), 10**40), (("extends",), "x" * 5000), (("extends",), "missing.yaml"),
    (("extends",), "."), (("extends",), ["base/comfyui-nunchaku.yaml", "base/comfyui-nunchaku.yaml"]),
    (("roles",), ["no-such-role"]), (("roles",), ["layout", "layout"]), (("role_paths",), ["/etc"]),
    (("vars", "python_packages"), ["tqdm>=4"]), (("vars", "python_packages"), ["ok==1", "bad pin"]),
    (("vars", "python_packages"), "tqdm==4.67.1"), (("vars", "python_packages"), [{"requirement": 5}]),
    (("vars", "models_dir"), "."), (("vars", "models_dir"), "../outside"), (("vars", "env_file"), "."),
    (("vars", "model_folders"), 5), (("vars", "pip_index_url"), "javascript:alert(1)"),
    (("vars", "bad name"), 1), (("service", "extra_args"), ["--listen\n0.0.0.0"]),
    (("models", 0, "file"), "../../x.safetensors"), (("models", 0, "folder"), "nowhere"),
    (("gpu", "index"), 10**6), (("checks", "workflow"), "."), (("checks", "workflow"), "absent.json"),
]

RESOURCES: list[dict[str, Any]] = [
    {"kind": "venv", "path": "."},
    {"kind": "git", "path": "./", "repo": "https://example.invalid/x", "force": True},
    {"kind": "git", "path": "", "repo": "https://example.invalid/x"},
    {"kind": "directory", "path": "a/../../b"},
    {"kind": "file", "path": "f.txt", "template": "no-such-template.j2"},
    {"kind": "file", "path": "f.txt", "template": "../../../etc/passwd"},
    {"kind": "file", "path": "f.txt", "content": "x", "template": "root-readme.txt.j2"},
    {"kind": "service", "name": "s", "argv": ["venv/bin/python"], "description": "a\n[Service]\nUser=root"},
    {"kind": "service", "name": "s", "argv": ["x y"]},
    {"kind": "service", "name": "s", "argv": ["x"], "ready": {"port": 0}},
    {"kind": "envfile", "path": "e.env", "values": {"A": "1\nB=2"}},
    {"kind": "envfile", "path": "e.env", "values": {"A": ["not", "a", "string"]}},
    {"kind": "envfile", "path": "e.env", "secrets": {"T": {"from_env": "PROVISION_UNSET_FOR_TESTS"}}},
    {"kind": "command", "name": "c", "argv": ["true"]},
    {"kind": "command", "name": "c", "argv": ["true"], "creates": "x", "env": {"A": "a\rb"}},
    {"kind": "download", "path": "m.bin", "url": "ftp://x", "size": -1},
    {"kind": "pip", "venv": "venv", "packages": []},
    {"kind": "bogus", "path": "x"},
    {"kind": "directory", "path": "x", "notify": ["no-such-handler"]},
    {"path": "no-kind"},
]


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path to a value inside `node`."""
    out: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _set(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {} if not isinstance(part, int) else [])
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return
    last = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node)):
        node[last] = value


def _get_parent(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def _dump(data: Any) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000).encode("utf-8")


# Data-level mutations: parse, change, dump.

def _delete_key(rng: random.Random, data: dict[str, Any]) -> str:
    path = rng.choice(_paths(data))
    parent = _get_parent(data, path)
    del parent[path[-1]]
    return f"delete {path}"


def _swap_type(rng: random.Random, data: dict[str, Any]) -> str:
    path = rng.choice(_paths(data))
    value = rng.choice(HOSTILE_VALUES)
    _get_parent(data, path)[path[-1]] = value
    return f"set {path} to {str(value)[:40]!r}"


def _unknown_key(rng: random.Random, data: dict[str, Any]) -> str:
    mappings = [p for p in _paths(data) if isinstance(_get_parent(data, (*p, "x")), dict)]
    path = rng.choice(mappings) if mappings else ()
    parent = _get_parent(data, (*path, "x"))
    parent[rng.choice(["bogus", "nmae", "root", "kind", "versoin", "é", "", "0"])] = rng.choice(HOSTILE_VALUES[:12])
    return f"unknown key under {path}"


def _destructive(rng: random.Random, data: dict[str, Any]) -> str:
    path, value = rng.choice(DESTRUCTIVE)
    _set(data, path, value)
    return f"set {path} to {str(value)[:40]!r}"


def _resource(rng: random.Random, data: dict[str, Any]) -> str:
    resource = dict(rng.choice(RESOURCES))
    resources = data.setdefault("resources", [])
    if not isinstance(resources, list):
        data["resources"] = resources = []
    resources.append(resource)
    if rng.random() < 0.3:
        resources.append(dict(resource))  # the same id twice
    return f"resource {resource}"[:120]


DATA_MUTATIONS: dict[str, Callable[[random.Random, dict[str, Any]], str]] = {
    "delete_key": _delete_key, "swap_type": _swap_type, "unknown_key": _unknown_key,
    "destructive": _destructive, "resource": _resource,
}


# Byte-level mutations of the file as written.

TAGS = ["!!python/object/apply:os.system ['id'] ", "!!python/name:os.system ", "!!binary ", "!foo ", "!!set ",
        "!!timestamp ", "!!int ", "!!float ", "!!bool ", "!!omap ", "!!str ", "!!null ", "!<tag:evil> "]
BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x00", b"\x07",
             b"\x1b[2J", b"\xef\xbb\xbf", b"\r", b"\t"]


def _lines(text: bytes) -> list[bytes]:
    return text.split(b"\n")


def _value_positions(text: bytes) -> list[int]:
    """Offsets just after 'key: ' on the lines that have a value."""
    out, offset = [], 0
    for line in _lines(text):
        colon = line.find(b": ")
        if colon >= 0 and not line.lstrip().startswith(b"#"):
            out.append(offset + colon + 2)
        offset += len(line) + 1
    return out or [len(text)]


def _inject_tag(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    at = rng.choice(_value_positions(text))
    tag = rng.choice(TAGS).encode()
    return text[:at] + tag + text[at:], f"tag {tag!r}"


def _duplicate_line(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    lines = _lines(text)
    index = rng.randrange(len(lines))
    lines.insert(index, lines[index])
    return b"\n".join(lines), f"duplicate line {index + 1}"


def _alias_bomb(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    key = rng.choice([b"vars", b"env", b"bomb", b"models"])
    width = rng.choice([9, 10, 16])
    levels = [b'lol0: &lol0 ["' + b"x" * 8 + b'"]']
    for level in range(1, rng.choice([8, 10, 12])):
        levels.append(b"lol%d: &lol%d [" % (level, level) + b",".join([b"*lol%d" % (level - 1)] * width) + b"]")
    bomb = b"\n".join(b"  " + line for line in levels)
    if rng.random() < 0.3:
        bomb = b"  self: &self [*self]"  # an alias inside its own anchor
    return text.rstrip(b"\n") + b"\n" + key + b":\n" + bomb + b"\n", f"alias bomb under {key!r}"


def _deep_nesting(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    depth = rng.choice([65, 200, 5000, 100_000])
    value = b"[" * depth + b"]" * depth if rng.random() < 0.5 else b"{a: " * depth + b"1" + b"}" * depth
    at = rng.choice(_value_positions(text))
    return text[:at] + value + b"\n#" + text[at:], f"nesting {depth}"


def _bad_bytes(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(text) + 1)
    bad = rng.choice(BAD_BYTES)
    return text[:at] + bad + text[at:], f"bytes {bad!r} at {at}"


def _surrogate(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    at = rng.choice(_value_positions(text))
    escape = rng.choice([b'"\\ud800"', b'"\\udfff tail"', b'"\\0"', b'"a\\x00b"', b'"\\U0010FFFF"'])
    return text[:at] + escape + b" #" + text[at:], f"escape {escape!r}"


def _truncate(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    at = rng.randrange(len(text) + 1)
    return text[:at], f"truncated at {at}"


def _huge_value(rng: random.Random, text: bytes) -> tuple[bytes, str]:
    size = rng.choice([100_000, 400_000, 5 * 1024 * 1024])
    at = rng.choice(_value_positions(text))
    kind = rng.choice([b"9", b"a", b"# "])
    filler = kind * size if kind != b"# " else b"# " + b"c" * size + b"\n"
    return text[:at] + filler + b"\n#" + text[at:], f"huge {kind!r} x {size}"


TEXT_MUTATIONS: dict[str, Callable[[random.Random, bytes], tuple[bytes, str]]] = {
    "inject_tag": _inject_tag, "duplicate_line": _duplicate_line, "alias_bomb": _alias_bomb,
    "deep_nesting": _deep_nesting, "bad_bytes": _bad_bytes, "surrogate": _surrogate, "truncate": _truncate,
    "huge_value": _huge_value,
}


INVENTORY = "fleet.example.yaml"


def generate_inventories(seed: int, count: int) -> list[Case]:
    """`count` mutated copies of the example fleet inventory, beside the manifests it names."""
    rng = random.Random(seed)
    originals = {**_seed_files(), INVENTORY: (MANIFESTS / INVENTORY).read_bytes()}
    kinds = ["delete_key", "swap_type", "unknown_key", *TEXT_MUTATIONS]
    cases = []
    for number in range(count):
        kind = kinds[number % len(kinds)]
        files = dict(originals)
        if kind in DATA_MUTATIONS:
            data = yaml.safe_load(files[INVENTORY])
            detail = DATA_MUTATIONS[kind](rng, data)
            files[INVENTORY] = _dump(data)
        else:
            files[INVENTORY], detail = TEXT_MUTATIONS[kind](rng, files[INVENTORY])
        cases.append(Case(f"inventory{number:04d}", f"{kind}: {detail}", files, INVENTORY, ""))
    return cases


def generate(seed: int, count: int) -> list[Case]:
    """`count` cases, the same for the same seed: each mutation kind in turn, on a random seed manifest."""
    rng = random.Random(seed)
    originals = _seed_files()
    kinds = [*DATA_MUTATIONS, *TEXT_MUTATIONS]
    cases = []
    for number in range(count):
        kind = kinds[number % len(kinds)]
        entry = rng.choice(sorted(SEEDS))
        files = dict(originals)
        # A third of the cases mutate the base the manifest extends, so errors must point into that file.
        target = BASE if b"extends: base/" in files[entry] and rng.random() < 0.33 else entry
        if kind in DATA_MUTATIONS:
            data = yaml.safe_load(files[target])
            detail = DATA_MUTATIONS[kind](rng, data)
            files[target] = _dump(data)
            if rng.random() < 0.5:  # and sometimes a byte-level mutation on top
                files[target], more = TEXT_MUTATIONS[rng.choice(list(TEXT_MUTATIONS))](rng, files[target])
                detail += f" + {more}"
        else:
            files[target], detail = TEXT_MUTATIONS[kind](rng, files[target])
        cases.append(Case(f"case{number:04d}", f"{kind} in {target}: {detail}", files, entry, SEEDS[entry]))
    return cases
