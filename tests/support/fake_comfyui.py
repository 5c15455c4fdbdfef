"""A stand-in for ComfyUI: a bare directory with a stdlib `main.py` that speaks ComfyUI's HTTP API.

It takes ComfyUI's own flags (--listen, --port, --disable-auto-launch, --cpu, --extra-model-paths-config),
loads `custom_nodes/*` the way ComfyUI's nodes.py does (NODE_CLASS_MAPPINGS; a traceback, "Cannot import
... module for custom nodes: ..." and an "(IMPORT FAILED)" import-times line for a plugin that raises),
and serves /system_stats, /object_info, /models, /models/<folder>, POST /prompt and /history/<id>.
Self-contained on purpose: the files it writes can be committed as the body of a stand-in ComfyUI repo.
"""

from __future__ import annotations

from pathlib import Path

MAIN_PY = r'''"""Stand-in ComfyUI server (stdlib only)."""
import argparse
import importlib.util
import json
import os
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "0.3.64-standin"
BASE = os.path.dirname(os.path.abspath(__file__))
FOLDERS = ["checkpoints", "clip", "clip_vision", "configs", "controlnet", "diffusion_models", "embeddings",
           "loras", "style_models", "text_encoders", "upscale_models", "vae"]
LEGACY = {"unet": "diffusion_models"}


class KSampler:
    CATEGORY = "sampling"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 20})}}


NODE_CLASS_MAPPINGS = {"KSampler": KSampler, "CheckpointLoaderSimple": KSampler, "UNETLoader": KSampler,
                       "VAEDecode": KSampler, "SaveImage": KSampler}
NODE_MODULES = {name: "nodes" for name in NODE_CLASS_MAPPINGS}
HISTORY = {}


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=str, default="127.0.0.1", nargs="?", const="0.0.0.0,::")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--disable-auto-launch", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--extra-model-paths-config", type=str, nargs="+", action="append")
    parser.add_argument("--quick-test-for-ci", action="store_true")
    parser.add_argument("--verbose", nargs="?", const="DEBUG", default="INFO")
    parser.add_argument("--log-stdout", action="store_true")
    parser.add_argument("--dont-print-server", action="store_true")
    return parser.parse_args()


def extra_model_paths(configs):
    """folder -> extra directories, from extra_model_paths.yaml files ('folder: path' lines under a base_path)."""
    extra = {}
    paths = [os.path.join(BASE, "extra_model_paths.yaml")] + [p for group in configs or [] for p in group]
    for path in paths:
        if not os.path.isfile(path):
            continue
        base = ""
        for raw in open(path, encoding="utf-8"):
            line = raw.split("#", 1)[0].rstrip()
            if ":" not in line or not line.startswith("    "):
                continue
            key, value = [part.strip() for part in line.split(":", 1)]
            if key == "base_path":
                base = value
            elif value:
                extra.setdefault(key, []).append(os.path.join(base, value))
    return extra


def load_custom_node(module_path):
    name = os.path.basename(module_path)
    if os.path.isfile(module_path):
        name = os.path.splitext(name)[0]
        spec = importlib.util.spec_from_file_location(name, module_path)
    else:
        spec = importlib.util.spec_from_file_location(name, os.path.join(module_path, "__init__.py"))
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is None:
            print("Skip %s module for custom nodes due to the lack of NODE_CLASS_MAPPINGS." % module_path)
            return False
        for node in mappings:
            if node not in NODE_CLASS_MAPPINGS:
                NODE_CLASS_MAPPINGS[node] = mappings[node]
                NODE_MODULES[node] = "custom_nodes." + name
        return True
    except Exception as e:
        print(traceback.format_exc())
        print("Cannot import %s module for custom nodes: %s" % (module_path, e))
        return False


def load_custom_nodes():
    root = os.path.join(BASE, "custom_nodes")
    times = []
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, entry)
        if entry == "__pycache__" or entry.endswith(".disabled"):
            continue
        if os.path.isfile(path) and not entry.endswith(".py"):
            continue
        started = time.perf_counter()
        ok = load_custom_node(path)
        times.append((time.perf_counter() - started, path, ok))
    if times:
        print("\nImport times for custom nodes:")
        for seconds, path, ok in sorted(times):
            print("{:6.1f} seconds{}: {}".format(seconds, "" if ok else " (IMPORT FAILED)", path))
        print()


def list_folder(folder, extra):
    folder = LEGACY.get(folder, folder)
    if folder not in FOLDERS:
        return None
    roots = [os.path.join(BASE, "models", folder)] + extra.get(folder, [])
    if folder == "diffusion_models":
        roots.append(os.path.join(BASE, "models", "unet"))
    found = set()
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                found.add(rel.replace(os.sep, "/"))
    return sorted(found)


def object_info():
    info = {}
    for name, cls in NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES() if hasattr(cls, "INPUT_TYPES") else {"required": {}}
        info[name] = {"input": inputs, "output": list(getattr(cls, "RETURN_TYPES", ())), "name": name,
                      "display_name": name, "category": getattr(cls, "CATEGORY", "custom"),
                      "python_module": NODE_MODULES.get(name, "nodes"), "output_node": False}
    return info


def run_prompt(prompt_id, prompt):
    steps = sum(int(node.get("inputs", {}).get("steps", 0)) for node in prompt.values()
                if node.get("class_type") == "KSampler")
    start = time.time()
    for step in range(1, steps + 1):
        time.sleep(0.01)
        rate = step / max(time.time() - start, 1e-6)
        sys.stderr.write("%3d%%|#| %d/%d [00:00<00:00, %.2fit/s]\n" % (100 * step // steps, step, steps, rate))
        sys.stderr.flush()
    HISTORY[prompt_id] = {"prompt": [0, prompt_id, prompt, {}, []], "outputs": {}, "status": {
        "status_str": "success", "completed": True,
        "messages": [["execution_start", {"prompt_id": prompt_id, "timestamp": int(start * 1000)}],
                     ["execution_success", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)}]]}}


def make_handler(args, extra):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, status, payload):
            body = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path.startswith("/api/"):
                path = path[4:]
            if path == "/system_stats":
                return self.reply(200, {
                    "system": {"os": os.name, "python_version": sys.version, "embedded_python": False,
                               "comfyui_version": VERSION, "pytorch_version": "none", "argv": sys.argv,
                               "ram_total": 0, "ram_free": 0},
                    "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                                 "torch_vram_total": 0, "torch_vram_free": 0}]})
            if path == "/object_info":
                return self.reply(200, object_info())
            if path.startswith("/object_info/"):
                info = object_info()
                name = path[len("/object_info/"):]
                return self.reply(200, {name: info[name]} if name in info else {})
            if path == "/models":
                return self.reply(200, FOLDERS)
            if path.startswith("/models/"):
                files = list_folder(path[len("/models/"):], extra)
                if files is None:
                    self.send_response(404)
                    self.end_headers()
                    return None
                return self.reply(200, files)
            if path.startswith("/history/"):
                prompt_id = path[len("/history/"):]
                return self.reply(200, {prompt_id: HISTORY[prompt_id]} if prompt_id in HISTORY else {})
            self.send_response(404)
            self.end_headers()
            return None

        def do_POST(self):
            path = self.path[4:] if self.path.startswith("/api/") else self.path
            if path != "/prompt":
                self.send_response(404)
                self.end_headers()
                return None
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            prompt = body.get("prompt") or {}
            unknown = {k: v.get("class_type") for k, v in prompt.items()
                       if v.get("class_type") not in NODE_CLASS_MAPPINGS}
            if unknown:
                return self.reply(400, {"error": {"type": "invalid_prompt", "message": "Cannot execute because "
                                                  "a node is missing the class_type property.",
                                                  "details": str(unknown)}, "node_errors": {}})
            prompt_id = str(uuid.uuid4())
            threading.Thread(target=run_prompt, args=(prompt_id, prompt), daemon=True).start()
            return self.reply(200, {"prompt_id": prompt_id, "number": 0, "node_errors": {}})

    return Handler


def main():
    args = parse_args()
    extra = extra_model_paths(args.extra_model_paths_config)
    print("Total VRAM 0 MB, total RAM 0 MB")
    print("Device: cpu" if args.cpu else "Device: cuda:0 (stand-in)")
    load_custom_nodes()
    host = args.listen.split(",")[0]
    server = ThreadingHTTPServer((host, args.port), make_handler(args, extra))
    print("Starting server\n")
    print("To see the GUI go to: http://%s:%d" % (host, args.port))
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()
'''


def make_fake_comfyui(path: Path, plugins: dict[str, str] | None = None,
                      models: dict[str, list[str]] | None = None) -> Path:
    """Write a stand-in ComfyUI at `path`: main.py, custom_nodes/<name>/__init__.py, models/<folder>/<file>."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.py").write_text(MAIN_PY, encoding="utf-8")
    (path / "custom_nodes").mkdir(exist_ok=True)
    for name, source in (plugins or {}).items():
        plugin = path / "custom_nodes" / name
        plugin.mkdir(parents=True, exist_ok=True)
        (plugin / "__init__.py").write_text(source, encoding="utf-8")
    for folder, files in (models or {}).items():
        for file in files:
            target = path / "models" / folder / file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"stand-in model\n")
    return path


def plugin_source(nodes: list[str], fail_with: str | None = None) -> str:
    """A custom-node package registering `nodes`, or raising `fail_with` (an expression) on import."""
    if fail_with:
        return f"raise {fail_with}\n"
    classes = "".join(f"class {n}:\n    CATEGORY = 'stand-in'\n\n\n" for n in nodes)
    mapping = ", ".join(f"{n!r}: {n}" for n in nodes)
    return f"{classes}NODE_CLASS_MAPPINGS = {{{mapping}}}\n"
