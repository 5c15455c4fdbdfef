"""A stand-in for ComfyUI: a bare directory with a stdlib `main.py` that speaks ComfyUI's HTTP API.

It behaves like real ComfyUI (0.3.64) wherever provision depends on it:
- it takes ComfyUI's own flags (--listen, --port, --disable-auto-launch, --cpu, --cuda-device, which sets
  CUDA_VISIBLE_DEVICES as main.py does, --extra-model-paths-config);
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
It serves /system_stats, /object_info, /models, /models/<folder>, /queue, /history and /history/<id>, and
POST /prompt validates the prompt against its nodes' INPUT_TYPES as execution.validate_prompt does (the
model COMBOs list the models folders), answering 400 with ComfyUI's {"error", "node_errors"} shapes; a
valid prompt runs (sampler progress on stderr), its SaveImage nodes write PNGs into output/, and history
gets ComfyUI's entry; a model file that starts with b"damaged" fails the run with an execution_error.
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
import struct
import sys
import threading
import time
import traceback
import uuid
import zlib
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


SAMPLERS = ["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_2m_sde", "res_multistep"]
SCHEDULERS = ["simple", "normal", "karras", "exponential", "sgm_uniform", "beta"]
INT = ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff})
FLOAT = ("FLOAT", {"default": 1.0})
STRING = ("STRING", {"multiline": True})


def files(folder):
    """A COMBO of a models folder's files, read when object_info or a prompt's validation asks (as
    folder_paths.get_filename_list does)."""
    return lambda: (folder_paths_list(folder),)


# Core node classes as nodes.py / comfy_extras declare them (a subset: the inputs the standard image
# workflows use): name -> (required inputs, optional inputs, RETURN_TYPES, OUTPUT_NODE).
CORE_NODES = {
    "CheckpointLoaderSimple": ({"ckpt_name": files("checkpoints")}, {}, ("MODEL", "CLIP", "VAE"), False),
    "UNETLoader": ({"unet_name": files("diffusion_models"),
                    "weight_dtype": (["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],)},
                   {}, ("MODEL",), False),
    "CLIPLoader": ({"clip_name": files("text_encoders"),
                    "type": (["stable_diffusion", "stable_cascade", "sd3", "flux", "qwen_image", "lumina2"],)},
                   {"device": (["default", "cpu"],)}, ("CLIP",), False),
    "DualCLIPLoader": ({"clip_name1": files("text_encoders"), "clip_name2": files("text_encoders"),
                        "type": (["sdxl", "sd3", "flux", "hunyuan_video", "hidream"],)},
                       {"device": (["default", "cpu"],)}, ("CLIP",), False),
    "VAELoader": ({"vae_name": files("vae")}, {}, ("VAE",), False),
    "LoraLoaderModelOnly": ({"model": ("MODEL",), "lora_name": files("loras"), "strength_model": FLOAT}, {},
                            ("MODEL",), False),
    "CLIPTextEncode": ({"text": STRING, "clip": ("CLIP",)}, {}, ("CONDITIONING",), False),
    "CLIPTextEncodeFlux": ({"clip": ("CLIP",), "clip_l": STRING, "t5xxl": STRING, "guidance": FLOAT}, {},
                           ("CONDITIONING",), False),
    "FluxGuidance": ({"conditioning": ("CONDITIONING",), "guidance": FLOAT}, {}, ("CONDITIONING",), False),
    "ConditioningZeroOut": ({"conditioning": ("CONDITIONING",)}, {}, ("CONDITIONING",), False),
    "TextEncodeQwenImageEditPlus": ({"clip": ("CLIP",), "prompt": STRING},
                                    {"vae": ("VAE",), "image1": ("IMAGE",), "image2": ("IMAGE",),
                                     "image3": ("IMAGE",)}, ("CONDITIONING",), False),
    "ModelSamplingAuraFlow": ({"model": ("MODEL",), "shift": FLOAT}, {}, ("MODEL",), False),
    "CFGNorm": ({"model": ("MODEL",), "strength": FLOAT}, {}, ("MODEL",), False),
    "EmptyImage": ({"width": INT, "height": INT, "batch_size": INT, "color": INT}, {}, ("IMAGE",), False),
    "FluxKontextImageScale": ({"image": ("IMAGE",)}, {}, ("IMAGE",), False),
    "EmptySD3LatentImage": ({"width": INT, "height": INT, "batch_size": INT}, {}, ("LATENT",), False),
    "EmptyLatentImage": ({"width": INT, "height": INT, "batch_size": INT}, {}, ("LATENT",), False),
    "VAEEncode": ({"pixels": ("IMAGE",), "vae": ("VAE",)}, {}, ("LATENT",), False),
    "KSampler": ({"model": ("MODEL",), "seed": INT, "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                  "cfg": FLOAT, "sampler_name": (SAMPLERS,), "scheduler": (SCHEDULERS,),
                  "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
                  "denoise": FLOAT}, {}, ("LATENT",), False),
    "VAEDecode": ({"samples": ("LATENT",), "vae": ("VAE",)}, {}, ("IMAGE",), False),
    "SaveImage": ({"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})}, {}, (), True),
}


def core_node(name, required, optional, returns, output_node):
    def input_types(cls):
        resolve = lambda spec: spec() if callable(spec) else spec  # noqa: E731
        inputs = {"required": {k: resolve(v) for k, v in required.items()}}
        if optional:
            inputs["optional"] = {k: resolve(v) for k, v in optional.items()}
        return inputs
    return type(name, (), {"CATEGORY": "stand-in", "RETURN_TYPES": returns, "OUTPUT_NODE": output_node,
                           "INPUT_TYPES": classmethod(input_types)})


NODE_CLASS_MAPPINGS = {name: core_node(name, *spec) for name, spec in CORE_NODES.items()}
NODE_MODULES = {name: "nodes" for name in NODE_CLASS_MAPPINGS}
HISTORY = {}
NUMBER = [0]
QUEUE = {"running": [], "pending": []}
QUEUE_LOCK = threading.Lock()
EXTRA_PATHS = {}


def folder_paths_list(folder):
    return list_folder(folder, EXTRA_PATHS) or []


def install_folder_paths():
    """ComfyUI's folder_paths module, which custom nodes import to list model files."""
    module = type(sys)("folder_paths")
    module.get_filename_list = folder_paths_list
    module.models_dir = os.path.join(BASE, "models")
    module.get_output_directory = lambda: os.path.join(BASE, "output")
    sys.modules["folder_paths"] = module


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=str, default="127.0.0.1", nargs="?", const="0.0.0.0,::")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--disable-auto-launch", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--cuda-device", type=int, default=None, metavar="DEVICE_ID")
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
                      "python_module": NODE_MODULES.get(name, "nodes"),
                      "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
    return info


def input_types(class_type):
    cls = NODE_CLASS_MAPPINGS[class_type]
    return cls.INPUT_TYPES() if hasattr(cls, "INPUT_TYPES") else {"required": {}}


def validate_node(prompt, node_id, validated):
    """execution.py's validate_inputs: required inputs present, links to existing nodes, COMBO values in
    their lists; upstream nodes first, and an upstream error makes this node invalid without reasons."""
    if node_id in validated:
        return validated[node_id][0]
    node = prompt[node_id]
    types = input_types(node["class_type"])
    inputs = node.get("inputs") or {}
    errors = []
    valid = True
    for category in ("required", "optional"):
        for name, spec in (types.get(category) or {}).items():
            if name not in inputs:
                if category == "required":
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": "%s" % name, "extra_info": {"input_name": name}})
                continue
            value = inputs[name]
            if isinstance(value, list) and len(value) == 2:
                if str(value[0]) not in prompt:
                    errors.append({"type": "bad_linked_input", "message": "Bad linked input, must be a length-2 "
                                   "list of [node_id, slot_index]", "details": "%s" % name,
                                   "extra_info": {"input_name": name, "input_config": spec,
                                                  "received_value": value}})
                elif not validate_node(prompt, str(value[0]), validated):
                    valid = False
                continue
            if isinstance(spec[0], list) and value not in spec[0]:
                list_info = spec[0] if len(spec[0]) <= 20 else "(list of length %d)" % len(spec[0])
                errors.append({"type": "value_not_in_list", "message": "Value not in list",
                               "details": "%s: '%s' not in %s" % (name, value, list_info),
                               "extra_info": {"input_name": name, "input_config": spec, "received_value": value}})
    validated[node_id] = (valid and not errors, errors, node_id)
    return validated[node_id][0]


def validate_prompt(prompt):
    """(error, node_errors) as execution.validate_prompt builds them; (None, {}) when the prompt is valid."""
    outputs = []
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type "
                    "property.", "details": "Node ID '#%s'" % node_id, "extra_info": {}}, {}
        if node["class_type"] not in NODE_CLASS_MAPPINGS:
            return {"type": "invalid_prompt", "message": "Cannot execute because node %s does not exist."
                    % node["class_type"], "details": "Node ID '#%s'" % node_id, "extra_info": {}}, {}
        if getattr(NODE_CLASS_MAPPINGS[node["class_type"]], "OUTPUT_NODE", False):
            outputs.append(node_id)
    if not outputs:
        return {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                "extra_info": {}}, {}
    node_errors = {}
    failed = []
    good = []
    for output in outputs:
        validated = {}
        if validate_node(prompt, output, validated):
            good.append(output)
            continue
        logging.error("Failed to validate prompt for output %s:" % output)
        for node_id, (ok, reasons, _) in validated.items():
            if not ok and reasons:
                entry = node_errors.setdefault(node_id, {"errors": reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(output)
                failed += reasons
                logging.error("* %s %s:" % (prompt[node_id]["class_type"], node_id))
                for reason in reasons:
                    logging.error("  - %s: %s" % (reason["message"], reason["details"]))
        logging.error("Output will be ignored")
    if not good:
        details = "\n".join("%s: %s" % (r["message"], r["details"]) for r in failed)
        return {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                "details": details, "extra_info": {}}, node_errors
    return None, {}


def png_bytes(width=8, height=8):
    """A small valid RGB PNG (what SaveImage writes, smaller)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    rows = b"".join(b"\x00" + bytes([40, 90, 160]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def damaged_model(prompt):
    """A loader whose file is not a safetensors file (a truncated download): (node id, class, path) or None."""
    for node_id, node in prompt.items():
        for name, value in (node.get("inputs") or {}).items():
            if not isinstance(value, str) or not value.endswith(".safetensors"):
                continue
            for folder in FOLDERS:
                for root in [os.path.join(BASE, "models", folder)] + EXTRA_PATHS.get(folder, []):
                    path = os.path.join(root, value)
                    if os.path.isfile(path) and open(path, "rb").read(7) == b"damaged":
                        return node_id, node["class_type"], path
    return None


def run_prompt(prompt_id, number, prompt, outputs):
    """PromptExecutor.execute, stood in for: the samplers' steps with tqdm's progress lines, then each
    SaveImage writes a PNG into output/ and history gets ComfyUI's entry (prompt, outputs, status)."""
    item = [number, prompt_id, prompt, {"client_id": "provision-check"}, outputs]
    with QUEUE_LOCK:
        QUEUE["pending"].remove(item)
        QUEUE["running"].append(item)
    start = time.time()
    messages = [["execution_start", {"prompt_id": prompt_id, "timestamp": int(start * 1000)}],
                ["execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": int(start * 1000)}]]
    results = {}
    damaged = damaged_model(prompt)
    if damaged:
        node_id, class_type, path = damaged
        message = "Error while deserializing header: HeaderTooLarge"
        logging.error("!!! Exception during processing !!! %s" % message)
        messages.append(["execution_error", {
            "prompt_id": prompt_id, "node_id": node_id, "node_type": class_type, "executed": [],
            "exception_message": message + "\nFile path: %s" % path,
            "exception_type": "safetensors_rust.SafetensorError",
            "traceback": ["  File \"execution.py\", line 496, in execute\n"], "current_inputs": {},
            "current_outputs": [], "timestamp": int(time.time() * 1000)}])
        status = {"status_str": "error", "completed": False, "messages": messages}
    else:
        steps = sum(int(node.get("inputs", {}).get("steps", 0)) for node in prompt.values()
                    if node.get("class_type") == "KSampler")
        for step in range(1, steps + 1):
            time.sleep(0.01)
            rate = step / max(time.time() - start, 1e-6)
            sys.stderr.write("%3d%%|#| %d/%d [00:00<00:00, %.2fit/s]\n" % (100 * step // steps, step, steps, rate))
            sys.stderr.flush()
        for node_id, node in prompt.items():
            if node.get("class_type") != "SaveImage":
                continue
            prefix = str(node["inputs"].get("filename_prefix", "ComfyUI"))
            subfolder, base = os.path.split(prefix)
            folder = os.path.join(BASE, "output", subfolder)
            os.makedirs(folder, exist_ok=True)
            counter = len([f for f in os.listdir(folder) if f.startswith(base + "_")]) + 1
            filename = "%s_%05d_.png" % (base, counter)
            with open(os.path.join(folder, filename), "wb") as fh:
                fh.write(png_bytes())
            results[node_id] = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}
        messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)}])
        status = {"status_str": "success", "completed": True, "messages": messages}
        logging.info("Prompt executed in %.2f seconds" % (time.time() - start))
    with QUEUE_LOCK:
        QUEUE["running"].remove(item)
        HISTORY[prompt_id] = {"prompt": item, "outputs": results, "status": status, "meta": {
            k: {"node_id": k, "display_node": k, "parent_node": None, "real_node_id": k} for k in results}}


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
            if path == "/queue":
                with QUEUE_LOCK:
                    return self.reply(200, {"queue_running": list(QUEUE["running"]),
                                            "queue_pending": list(QUEUE["pending"])})
            if path == "/history":
                return self.reply(200, HISTORY)
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
            logging.info("got prompt")
            if "prompt" not in body:
                return self.reply(400, {"error": {"type": "no_prompt", "message": "No prompt provided",
                                                  "details": "No prompt provided", "extra_info": {}},
                                        "node_errors": {}})
            prompt = body["prompt"]
            error, node_errors = validate_prompt(prompt)
            if error:
                logging.warning("invalid prompt: {}".format(error))
                return self.reply(400, {"error": error, "node_errors": node_errors})
            prompt_id = str(body.get("prompt_id") or uuid.uuid4())
            outputs = [k for k, v in prompt.items() if getattr(NODE_CLASS_MAPPINGS[v["class_type"]], "OUTPUT_NODE", 0)]
            with QUEUE_LOCK:
                NUMBER[0] += 1
                number = NUMBER[0]
                QUEUE["pending"].append([number, prompt_id, prompt, {"client_id": "provision-check"}, outputs])
            threading.Thread(target=run_prompt, args=(prompt_id, number, prompt, outputs), daemon=True).start()
            return self.reply(200, {"prompt_id": prompt_id, "number": number, "node_errors": {}})

    return Handler


def main():
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # app/logger.py's format
    args = parse_args()
    if args.cuda_device is not None:  # as main.py does, before torch is imported
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.cuda_device)
        logging.info("Set cuda device to: {}".format(args.cuda_device))
    extra = extra_model_paths(args.extra_model_paths_config)
    EXTRA_PATHS.update(extra)
    install_folder_paths()
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


def _flux_inputs():
    import folder_paths
    return {{"required": {{"model_path": (folder_paths.get_filename_list("diffusion_models"),),
                         "cache_threshold": ("FLOAT", {{"default": 0, "min": 0, "max": 1}}),
                         "attention": (["nunchaku-fp16", "flash-attention2"],),
                         "cpu_offload": (["auto", "enable", "disable"],),
                         "device_id": ("INT", {{"default": 0, "min": 0, "max": 0}}),
                         "data_type": (["bfloat16", "float16"],)}},
            "optional": {{"i2f_mode": (["enabled", "always"],)}}}}


def _qwen_inputs():
    import folder_paths
    return {{"required": {{"model_name": (folder_paths.get_filename_list("diffusion_models"),),
                         "cpu_offload": (["auto", "enable", "disable"],)}},
            "optional": {{"num_blocks_on_gpu": ("INT", {{"default": 1, "min": 1, "max": 60}}),
                         "use_pin_memory": (["enable", "disable"],)}}}}


def _text_encoder_inputs():
    import folder_paths
    names = folder_paths.get_filename_list("text_encoders")
    return {{"required": {{"model_type": (["flux.1"],), "text_encoder1": (names,), "text_encoder2": (names,),
                         "t5_min_length": ("INT", {{"default": 512, "min": 256, "max": 1024, "step": 128}})}}}}


# The loaders' INPUT_TYPES as v1.2.1 declares them (nodes/models/flux.py, qwenimage.py, text_encoder.py); the
# model lists come from ComfyUI's folder_paths, as in the real plugin.
INPUTS = {{"NunchakuFluxDiTLoader": _flux_inputs, "NunchakuQwenImageDiTLoader": _qwen_inputs,
          "NunchakuTextEncoderLoaderV2": _text_encoder_inputs}}


def _node(name):
    attributes = {{"CATEGORY": "Nunchaku", "TITLE": name, "RETURN_TYPES": ("MODEL",)}}
    if name in INPUTS:
        attributes["INPUT_TYPES"] = classmethod(lambda cls: INPUTS[name]())
    return type(name, (), attributes)


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
