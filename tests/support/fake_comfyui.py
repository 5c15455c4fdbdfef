"""A stand-in for ComfyUI: a bare directory with a stdlib `main.py` that speaks ComfyUI's HTTP API.

It behaves like real ComfyUI (0.3.64) wherever provision depends on it:
- it takes ComfyUI's own flags (--listen, --port, --disable-auto-launch, --cpu, --extra-model-paths-config);
- start-up is slow: the "torch import" and device set-up come first, then comfy_extras and custom nodes
  are imported, and only then is the HTTP port bound; /system_stats answers after `startup_seconds`
  (default 15 s, like real ComfyUI's 15-25 s; tests about other things may lower it explicitly);
- without --cpu on a host with no NVIDIA driver it exits 1 with torch's "Found no NVIDIA driver on
  your system" RuntimeError traceback raised from comfy/model_management.py, as real ComfyUI does;
- it can die at start-up (`crash`: an exception raised while importing ComfyUI's own modules);
- it loads comfy_extras/nodes_*.py and custom_nodes/* the way nodes.py does, logging with
  ComfyUI's "%(message)s" format: a traceback and "Cannot import ... module for custom nodes: ...",
  the "(IMPORT FAILED)" import-times line, and the "WARNING: some comfy_extras/ nodes did not import
  correctly" summary with "IMPORT FAILED: nodes_x.py" lines;
- its ComfyUI-nunchaku stand-in (`nunchaku_plugin_source`) imports each node on its own from the
  installed `nunchaku` and logs "Node `X` import failed:" with the traceback, like the real plugin, so
  some nodes fail to import while others load.
It serves /system_stats, /object_info, /models, /models/<folder>, POST /prompt and /history/<id>.
Self-contained on purpose: the files it writes can be committed as the body of a stand-in ComfyUI repo.
"""

from __future__ import annotations

from pathlib import Path

_MAIN_TEMPLATE = r'''"""Stand-in ComfyUI server (stdlib only)."""
import argparse
import importlib.util
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "0.3.64-standin"
STARTUP_SECONDS = @STARTUP_SECONDS@
CRASH = @CRASH@
NO_DRIVER = ("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a "
             "driver from http://www.nvidia.com/Download/index.aspx")
# The order of nodes.py's init_builtin_extra_nodes (a subset).
EXTRAS_FILES = ["nodes_latent.py", "nodes_upscale_model.py", "nodes_mask.py", "nodes_canny.py", "nodes_images.py",
                "nodes_train.py", "nodes_audio.py", "nodes_flux.py", "nodes_qwen.py", "nodes_audio_encoder.py"]
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
# The loaders a model's workflow set is read by: in ComfyUI's own nodes.py.
NODE_CLASS_MAPPINGS.update({name: KSampler for name in ("CLIPLoader", "DualCLIPLoader", "VAELoader",
                                                        "LoraLoaderModelOnly")})
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


def load_custom_node(module_path, module_parent="custom_nodes"):
    name = os.path.basename(module_path)
    if os.path.isfile(module_path):
        name = os.path.splitext(name)[0]
        spec = importlib.util.spec_from_file_location(module_parent + "." + name, module_path)
    else:
        spec = importlib.util.spec_from_file_location(name, os.path.join(module_path, "__init__.py"))
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is None:
            logging.warning("Skip %s module for custom nodes due to the lack of NODE_CLASS_MAPPINGS or NODES_LIST "
                            "(need one)." % module_path)
            return False
        for node in mappings:
            if node not in NODE_CLASS_MAPPINGS:
                NODE_CLASS_MAPPINGS[node] = mappings[node]
                NODE_MODULES[node] = module_parent + "." + name
        return True
    except Exception as e:
        logging.warning(traceback.format_exc())
        logging.warning("Cannot import %s module for custom nodes: %s" % (module_path, e))
        return False


def init_builtin_extra_nodes():
    extras_dir = os.path.join(BASE, "comfy_extras")
    failed = []
    for node_file in EXTRAS_FILES:
        path = os.path.join(extras_dir, node_file)
        if os.path.isfile(path) and not load_custom_node(path, module_parent="comfy_extras"):
            failed.append(node_file)
    return failed


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
        logging.info("\nImport times for custom nodes:")
        for seconds, path, ok in sorted(times):
            logging.info("{:6.1f} seconds{}: {}".format(seconds, "" if ok else " (IMPORT FAILED)", path))
        logging.info("")


def report_extras(failed):
    if failed:
        logging.warning("WARNING: some comfy_extras/ nodes did not import correctly. This may be because they are "
                        "missing some dependencies.\n")
        for node in failed:
            logging.warning("IMPORT FAILED: {}".format(node))
        logging.warning("\nThis issue might be caused by new missing dependencies added the last time you updated "
                        "ComfyUI.")
        logging.warning("Please do a: pip install -r requirements.txt")
        logging.warning("")


def nvidia_driver_loaded():
    return os.path.exists("/proc/driver/nvidia/version")


def current_device():
    """torch.cuda.current_device() on a CUDA build of torch."""
    if not nvidia_driver_loaded():
        raise RuntimeError(NO_DRIVER)
    return 0


def get_torch_device(args):
    if args.cpu:
        return "cpu"
    return "cuda:%d" % current_device()


def import_comfy_modules(args):
    """What `import comfy.model_management` does at start-up: torch first, then the device."""
    time.sleep(STARTUP_SECONDS * 0.25)
    if CRASH:
        raise eval(CRASH)
    device = get_torch_device(args)
    logging.info("Total VRAM 0 MB, total RAM 0 MB")
    logging.info("pytorch version: 2.10.0+cpu" if device == "cpu" else "pytorch version: 2.10.0+cu130")
    logging.info("Device: %s" % device)
    logging.info("Python version: %s" % sys.version)
    logging.info("ComfyUI version: %s" % VERSION)


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
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # app/logger.py's format
    args = parse_args()
    extra = extra_model_paths(args.extra_model_paths_config)
    started = time.time()
    import_comfy_modules(args)
    failed_extras = init_builtin_extra_nodes()
    load_custom_nodes()
    report_extras(failed_extras)
    # The rest of the start-up (prompt server, database, frontend) before the port is bound.
    time.sleep(max(0.0, STARTUP_SECONDS - (time.time() - started)))
    host = args.listen.split(",")[0]
    server = ThreadingHTTPServer((host, args.port), make_handler(args, extra))
    logging.info("Starting server\n")
    logging.info("To see the GUI go to: http://%s:%d" % (host, args.port))
    server.serve_forever()


if __name__ == "__main__":
    main()
'''


REAL_STARTUP_SECONDS = 15.0


def comfyui_main_py(startup_seconds: float = REAL_STARTUP_SECONDS, crash: str | None = None) -> str:
    """The stand-in's main.py. `crash`: an exception expression raised during start-up, e.g.
    "ModuleNotFoundError(\"No module named 'torch'\")"."""
    return (_MAIN_TEMPLATE.replace("@STARTUP_SECONDS@", repr(float(startup_seconds)))
            .replace("@CRASH@", repr(crash)))


MAIN_PY = comfyui_main_py()

# comfy_extras files as ComfyUI ships them: a few import packages outside ComfyUI's own requirements.
EXTRAS_NEEDS = {"nodes_canny.py": "kornia", "nodes_audio.py": "torchaudio"}


def extras_source(name: str, missing: str | None = None) -> str:
    """A comfy_extras module registering one node; with `missing`, its import of that package fails."""
    node = "".join(part.title() for part in name[len("nodes_"):-len(".py")].split("_")) + "Node"
    failing = f"raise ModuleNotFoundError(\"No module named '{missing}'\", name={missing!r})\n\n\n" if missing else ""
    return f"{failing}class {node}:\n    CATEGORY = 'stand-in'\n\n\nNODE_CLASS_MAPPINGS = {{{node!r}: {node}}}\n"


def make_fake_comfyui(path: Path, plugins: dict[str, str] | None = None,
                      models: dict[str, list[str]] | None = None, startup_seconds: float = REAL_STARTUP_SECONDS,
                      crash: str | None = None, extras_missing: list[str] | None = None) -> Path:
    """Write a stand-in ComfyUI at `path`: main.py, comfy_extras/, custom_nodes/<name>/__init__.py,
    models/<folder>/<file>. `extras_missing`: modules the comfy_extras files import that are absent."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "main.py").write_text(comfyui_main_py(startup_seconds, crash), encoding="utf-8")
    extras = path / "comfy_extras"
    extras.mkdir(exist_ok=True)
    for name in ("nodes_latent.py", "nodes_mask.py", "nodes_images.py", "nodes_flux.py", *EXTRAS_NEEDS):
        needs = EXTRAS_NEEDS.get(name)
        (extras / name).write_text(extras_source(name, needs if needs in (extras_missing or []) else None))
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


# ComfyUI-nunchaku v1.2.1's __init__.py: node groups, each imported on its own, and what each imports from
# the backend (nodes/models/*.py); a group whose import fails is logged and left out.
NUNCHAKU_NODE_GROUPS: list[tuple[list[str], str]] = [
    (["NunchakuFluxDiTLoader"], "from nunchaku import NunchakuFluxTransformer2dModel"),
    (["NunchakuQwenImageDiTLoader"], "from nunchaku.models.transformers.transformer_qwenimage import "
                                     "NunchakuQwenImageTransformer2DModel"),
    (["NunchakuFluxLoraLoader", "NunchakuFluxLoraStack"], "from nunchaku.lora.flux import to_diffusers"),
    (["NunchakuTextEncoderLoader", "NunchakuTextEncoderLoaderV2"], "from nunchaku import NunchakuT5EncoderModel"),
    (["NunchakuPulidApply", "NunchakuPulidLoader", "NunchakuPuLIDLoaderV2", "NunchakuFluxPuLIDApplyV2"],
     "from nunchaku.pipeline.pipeline_flux_pulid import PuLIDPipeline"),
    (["NunchakuFluxIPAdapterApply", "NunchakuIPAdapterLoader"],
     "from nunchaku.models.ip_adapter.diffusers_adapters import apply_IPA_on_pipe"),
    (["NunchakuZImageDiTLoader"], "from nunchaku.models.transformers.utils import convert_fp16, patch_scale_key"),
    (["NunchakuWheelInstaller"], "import json"),
]


def _failure_message(names: list[str]) -> str:
    """The plugin's own wording: "Node `A`", "Nodes `A` and `B`", "Nodes `A`,`B` and `C`"; its Z-Image
    line says "Nodes" for one node."""
    quoted = [f"`{n}`" for n in names]
    if len(quoted) == 1:
        noun = "Nodes" if names[0] == "NunchakuZImageDiTLoader" else "Node"
        return f"{noun} {quoted[0]} import failed:"
    return f"Nodes {','.join(quoted[:-1])} and {quoted[-1]} import failed:"


def nunchaku_plugin_source(version: str = "1.2.1", min_backend: str = "1.0.0") -> str:
    """A stand-in ComfyUI-nunchaku that logs and imports like the real v1.2.1 __init__.py."""
    blocks = "".join(
        f"try:\n    {statement}\n" + "".join(f"    NODE_CLASS_MAPPINGS[{n!r}] = _node({n!r})\n" for n in names)
        + f"except ImportError:\n    logger.exception({_failure_message(names)!r})\n\n"
        for names, statement in NUNCHAKU_NODE_GROUPS)
    return f'''import logging
import os
from importlib.metadata import PackageNotFoundError, metadata

logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(levelname)s - %(message)s")
logger = logging.getLogger(__name__)
logger.info("=" * 40 + " ComfyUI-nunchaku Initialization " + "=" * 40)


def get_package_version(package_name):
    try:
        return dict(metadata(package_name)).get("Version", "Unknown version")
    except PackageNotFoundError:
        return f"Package '{{package_name}}' not found."


def _version(text):
    parts = text.split(".")
    if not all(p.isdigit() for p in parts):
        raise ValueError(text)
    return tuple(int(p) for p in parts)


nunchaku_full_version = get_package_version("nunchaku").split("+")[0].strip()
logger.info(f"Nunchaku version: {{nunchaku_full_version}}")
logger.info("ComfyUI-nunchaku version: {version}")
try:
    if _version(".".join(nunchaku_full_version.split(".")[:3])) < _version("{min_backend}"):
        logger.warning("ComfyUI-nunchaku {version} requires nunchaku >= v{min_backend}, "
                       f"but found nunchaku {{nunchaku_full_version}}. Please update nunchaku.")
except ValueError:
    logger.warning(f"Could not parse nunchaku version: {{nunchaku_full_version}}. "
                   "Please ensure you have at least v{min_backend}.")


def _node(name):
    return type(name, (), {{"CATEGORY": "Nunchaku", "TITLE": name}})


NODE_CLASS_MAPPINGS = {{}}

{blocks}NODE_DISPLAY_NAME_MAPPINGS = {{k: v.TITLE for k, v in NODE_CLASS_MAPPINGS.items()}}
logger.info("=" * (80 + len(" ComfyUI-nunchaku Initialization ")))
'''


def _absent(module: str) -> str:
    """A module whose import of an optional dependency fails (that dependency is not installed)."""
    return f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"


def install_nunchaku_backend(site_packages: Path, version: str) -> None:
    """A stand-in nunchaku backend in a venv's site-packages: the modules the plugin's nodes import, as they
    exist in that release (patch_scale_key from 1.1.0, convert_fp16 from 1.2.0), and its dist-info."""
    release = tuple(int(p) for p in version.split("+")[0].split(".")[:3])
    package = site_packages / "nunchaku"
    files = {
        "__init__.py": "from ._C import QuantizedFluxModel\n\n\nclass NunchakuFluxTransformer2dModel:\n    pass\n\n\n"
                       "class NunchakuT5EncoderModel:\n    pass\n",
        "_C.py": "class QuantizedFluxModel:\n    pass\n",
        "lora/__init__.py": "", "lora/flux/__init__.py": "def to_diffusers(path):\n    return path\n",
        "models/__init__.py": "", "models/transformers/__init__.py": "",
        "models/transformers/transformer_qwenimage.py": "class NunchakuQwenImageTransformer2DModel:\n    pass\n",
        "models/transformers/utils.py": "".join(
            f"def {name}(*args):\n    return args\n\n\n" for name, since in (("patch_scale_key", (1, 1, 0)),
                                                                              ("convert_fp16", (1, 2, 0)))
            if release >= since),
        "models/ip_adapter/__init__.py": "",
        "models/ip_adapter/diffusers_adapters.py": _absent("insightface"),
        "pipeline/__init__.py": "",
        "pipeline/pipeline_flux_pulid.py": _absent("facexlib"),
    }
    for relative, body in files.items():
        target = package / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
    info = site_packages / f"nunchaku-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nunchaku\nVersion: {version}\n"
                                   "Summary: Nunchaku: SVDQuant inference engine\n", encoding="utf-8")
    # RECORD lists its nunchaku/_C module, which is what tells the real engine from PyPI's unrelated `nunchaku`.
    record = [f"nunchaku/{relative},," for relative in files] + [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n", encoding="utf-8")
