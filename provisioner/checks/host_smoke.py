"""On-host ComfyUI smoke test: start ComfyUI on 127.0.0.1, ask its HTTP API, stop what was started.

The requests come from the host itself, since ComfyUI listens on the host's loopback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

LOG_LIMIT = 256 * 1024
# ComfyUI still answers /models/unet and /models/clip under their newer names in some versions only.
LEGACY_FOLDERS = {"unet": "diffusion_models", "clip": "text_encoders"}


def smoke_argv(service_argv: list[str], root: str, port: int) -> list[str]:
    """The service's command line with only --listen and --port changed (loopback and a free port), and
    argv[0] made absolute the way the service agent does."""
    argv = list(service_argv)
    if argv and "/" in argv[0] and not argv[0].startswith("/"):
        argv[0] = os.path.normpath(os.path.join(root, argv[0]))
    for flag, value in (("--listen", "127.0.0.1"), ("--port", str(port))):
        index = next((i for i, a in enumerate(argv) if a == flag or a.startswith(flag + "=")), None)
        if index is None:
            argv += [flag, value]
        elif argv[index].startswith(flag + "="):
            argv[index] = f"{flag}={value}"
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            argv[index + 1] = value
        else:
            argv.insert(index + 1, value)
    return argv


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def get_json(base: str, path: str, timeout: float = 10.0, data: Any = None) -> Any:
    body = json.dumps(data).encode("utf-8") if data is not None else None
    request = urllib.request.Request(base + path, data=body, headers={"Content-Type": "application/json"})
    # ComfyUI is on loopback: an HTTP proxy from the environment must not be asked for it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


class SmokeState:
    """The ComfyUI process this run started (if any), its log, and what its API answered."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.config: dict[str, Any] = request.get("smoke", {})
        self.venv_missing = bool(request.get("venv_missing"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: str | None = None
        self.log_dir: str | None = None
        self.base: str | None = None
        self.object_info: dict[str, Any] | None = None
        self.started = False

    def log_text(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - LOG_LIMIT))
            return fh.read().decode("utf-8", "replace")

    def start(self) -> dict[str, Any]:
        """Use the running service when asked to, else start ComfyUI on a free loopback port."""
        config = self.config
        if config.get("use_running"):
            host = config.get("listen") or "127.0.0.1"
            host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            self.base = f"http://{host}:{int(config.get('port', 8188))}"
            try:
                stats = get_json(self.base, "/system_stats", timeout=5)
            except (OSError, ValueError) as exc:
                return {"mode": "running", "url": self.base, "error": f"no ComfyUI answers at {self.base}: {exc}"}
            return {"mode": "running", "url": self.base, "stats": stats}
        if self.venv_missing:
            return {"mode": "started", "venv_missing": config.get("python")}
        comfy_dir = config.get("comfyui_dir") or ""
        main = os.path.join(comfy_dir, "main.py")
        if not os.path.isfile(main):
            return {"mode": "started", "missing": main}
        port = free_port()
        # Exactly the service's command line (--cpu included where the host was resolved to CPU mode).
        argv = smoke_argv(list(config.get("argv") or []), str(config.get("root") or "/"), port)
        self.log_dir = tempfile.mkdtemp(prefix="provision-smoke-")
        self.log_path = os.path.join(self.log_dir, "comfyui.log")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.started = True
        self.base = f"http://127.0.0.1:{port}"
        started = time.time()
        deadline = started + float(config.get("start_timeout", 300))
        last_error = ""
        while time.time() < deadline:
            if self.process.poll() is not None:
                return {"mode": "started", "argv": argv, "exited": self.process.returncode,
                        "seconds": round(time.time() - started, 1), "log": self.log_text()[-20000:]}
            try:
                stats = get_json(self.base, "/system_stats", timeout=5)
                return {"mode": "started", "argv": argv, "pid": self.process.pid, "url": self.base,
                        "seconds": round(time.time() - started, 1), "stats": stats,
                        "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES")}
            except (OSError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(0.5)
        return {"mode": "started", "argv": argv, "timeout": float(config.get("start_timeout", 300)),
                "last_error": last_error, "log": self.log_text()[-20000:]}

    def stop(self) -> None:
        """Stop the ComfyUI this run started: its whole process group, by its PID."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
            except ProcessLookupError:
                pass
        if self.log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None

    def serving(self) -> bool:
        return self.base is not None and (self.process is None or self.process.poll() is None)


def check_server(ctx: Any) -> dict[str, Any]:
    smoke: SmokeState = ctx.smoke
    observed = smoke.start()
    observed["ready"] = "stats" in observed
    return observed


def check_plugins(ctx: Any) -> dict[str, Any]:
    smoke: SmokeState = ctx.smoke
    exited = smoke.process.poll() if smoke.process is not None else None
    return {"started": smoke.started, "log": smoke.log_text(), "plugins": smoke.config.get("plugins", []),
            "needed": list(smoke.config.get("nodes") or []), "exited": exited}


def check_nodes(ctx: Any) -> dict[str, Any]:
    smoke: SmokeState = ctx.smoke
    observed: dict[str, Any] = {"ready": smoke.serving(), "wanted": list(smoke.config.get("nodes") or [])}
    if not observed["ready"]:
        return observed
    assert smoke.base is not None
    smoke.object_info = get_json(smoke.base, "/object_info", timeout=60)
    registered = smoke.object_info or {}
    observed["registered_count"] = len(registered)
    observed["missing"] = [n for n in observed["wanted"] if n not in registered]
    observed["modules"] = {n: registered[n].get("python_module") for n in observed["wanted"] if n in registered}
    observed["log"] = smoke.log_text() if observed["missing"] else ""
    observed["plugins"] = list(smoke.config.get("plugins") or [])
    return observed


def check_models(ctx: Any) -> dict[str, Any]:
    smoke: SmokeState = ctx.smoke
    wanted = list(smoke.config.get("models") or [])
    observed: dict[str, Any] = {"ready": smoke.serving(), "wanted": wanted}
    if not observed["ready"] or not wanted:
        return observed
    assert smoke.base is not None
    listings: dict[str, Any] = {}
    for folder in sorted({m["folder"] for m in wanted}):
        listings[folder] = _list_folder(smoke.base, folder)
    observed["listings"] = listings
    return observed


def _list_folder(base: str, folder: str) -> Any:
    for name in (folder, LEGACY_FOLDERS.get(folder)):
        if not name:
            continue
        try:
            return get_json(base, "/models/" + urllib.parse.quote(name), timeout=30)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                return {"error": f"HTTP {exc.code}"}
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}
    return {"error": f"ComfyUI has no model folder {folder!r} (404)"}


TQDM_RATE = re.compile(r"(\d+)/(\d+) \[[^\]]*?,\s*([0-9.]+)(it/s|s/it)\]")


def check_workflow(ctx: Any) -> dict[str, Any]:
    """Queue the workflow (POST /prompt) and follow /history/<id> to its end, twice: the first run loads the
    models (cold), the second, with the samplers' seeds changed so that ComfyUI's cache does not answer
    it, is the warm figure. /system_stats is sampled for VRAM meanwhile."""
    smoke: SmokeState = ctx.smoke
    config = smoke.config
    workflow = config.get("workflow")
    observed: dict[str, Any] = {"ready": smoke.serving(), "configured": bool(config.get("workflow_name")),
                                "skipped": config.get("workflow_skipped"), "name": config.get("workflow_name"),
                                "written": config.get("workflow_written") or [], "steps": config.get("workflow_steps")}
    if not observed["ready"] or workflow is None:
        return observed
    assert smoke.base is not None
    vram = VramSampler(smoke.base)
    vram.sample()
    observed["timeout"] = float(config.get("workflow_timeout", 900))
    runs = max(1, int(config.get("workflow_runs", 2)))
    for number in range(runs):
        if number:
            observed["seconds_cold"] = observed.pop("seconds")
            cold_outputs = observed.get("outputs") or []
        _run_once(smoke, _reseeded(workflow, number), observed, vram)
        if number:
            observed["outputs"] = cold_outputs + (observed.get("outputs") or [])
        status = observed.get("status") or {}
        if "refused" in observed or observed.get("error") or observed.get("timed_out") or not status.get("completed"):
            break
        observed["runs"] = number + 1
    observed.update(vram.report())
    return observed


def _reseeded(workflow: dict[str, Any], number: int) -> dict[str, Any]:
    """The workflow with each literal sampler seed moved on by `number` (a new prompt, not ComfyUI's cached one)."""
    if not number:
        return workflow
    changed: dict[str, Any] = json.loads(json.dumps(workflow))
    for node in changed.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for key in ("seed", "noise_seed"):
            if isinstance(inputs, dict) and isinstance(inputs.get(key), int):
                inputs[key] = (inputs[key] + number) % 2**64
    return changed


def _run_once(smoke: SmokeState, workflow: dict[str, Any], observed: dict[str, Any], vram: VramSampler) -> None:
    """One queued run: its prompt_id, seconds, history status and output files, the sampler's progress rate."""
    assert smoke.base is not None
    log_before = len(smoke.log_text())
    started = time.time()
    try:
        queued = get_json(smoke.base, "/prompt", timeout=60, data={"prompt": workflow, "client_id": "provision-check"})
    except urllib.error.HTTPError as exc:
        observed["http_status"] = exc.code
        observed["refused"] = _error_body(exc)
        return
    except (OSError, ValueError) as exc:
        observed["error"] = f"POST /prompt failed: {exc}"
        return
    prompt_id = str(queued.get("prompt_id"))
    observed["prompt_id"] = prompt_id
    deadline = started + float(observed["timeout"])
    entry = None
    while time.time() < deadline:
        vram.sample()
        try:
            history = get_json(smoke.base, "/history/" + urllib.parse.quote(prompt_id), timeout=30)
        except (OSError, ValueError) as exc:
            observed["error"] = f"GET /history/{prompt_id} failed: {exc}"
            break
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        # ComfyUI adds the history entry once the prompt ran (task_done), successful or not.
        if isinstance(entry, dict) and isinstance(entry.get("status"), dict):
            break
        entry = None
        if smoke.process is not None and smoke.process.poll() is not None:
            observed["error"] = (f"ComfyUI exited ({smoke.process.returncode}) while running the workflow: "
                                 + (smoke.log_text().strip().splitlines() or ["(no output)"])[-1])
            break
        time.sleep(0.5)
    observed["seconds"] = round(time.time() - started, 2)
    vram.sample()
    observed["timed_out"] = entry is None and "error" not in observed
    if entry is not None:
        observed["status"] = entry.get("status")
        observed["outputs"] = _output_files(entry.get("outputs") or {}, str(smoke.config.get("comfyui_dir") or ""))
    rates = TQDM_RATE.findall(smoke.log_text()[max(0, log_before - 1000):])
    if rates:
        _done, total, value, unit = rates[-1]
        observed["seconds_per_iteration"] = float(value) if unit == "s/it" else round(1.0 / float(value), 4)
        observed["iterations"] = int(total)


def _error_body(exc: urllib.error.HTTPError) -> Any:
    """ComfyUI's refusal: {"error": {type, message, details, extra_info}, "node_errors": {...}}, or its text."""
    text = exc.read().decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text[-4000:]


def _output_files(outputs: Any, comfy_dir: str) -> list[str]:
    """The files a run saved, from history outputs ({node: {"images": [{filename, subfolder, type}]}}), as
    paths on the host (type "output" lies under ComfyUI's output/, "temp" under temp/)."""
    files: list[str] = []
    for node_output in outputs.values() if isinstance(outputs, dict) else []:
        for kind in ("images", "gifs", "videos", "audio"):
            for item in (node_output or {}).get(kind) or []:
                if isinstance(item, dict) and item.get("filename"):
                    folder = "temp" if item.get("type") == "temp" else "output"
                    files.append(os.path.join(comfy_dir, folder, str(item.get("subfolder") or ""),
                                              str(item["filename"])))
    return [os.path.normpath(f) for f in files]


class VramSampler:
    """Peak GPU memory while the workflow runs, sampled from ComfyUI's /system_stats. Its devices report
    torch_vram_total (memory torch reserved) and torch_vram_free (reserved but unused), so their difference
    is what torch holds allocated: torch.cuda.max_memory_allocated() itself is only readable inside ComfyUI.
    vram_total - vram_free is the whole device's use (every process, as nvidia-smi counts it)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.device: str | None = None
        self.torch_peak = 0
        self.device_peak = 0
        self.device_before: int | None = None

    def sample(self) -> None:
        try:
            stats = get_json(self.base, "/system_stats", timeout=5)
        except (OSError, ValueError):
            return
        devices = stats.get("devices") or [] if isinstance(stats, dict) else []
        if not devices or not isinstance(devices[0], dict):
            return
        device = devices[0]
        self.device = str(device.get("type") or device.get("name"))
        torch_used = int(device.get("torch_vram_total") or 0) - int(device.get("torch_vram_free") or 0)
        device_used = int(device.get("vram_total") or 0) - int(device.get("vram_free") or 0)
        if self.device_before is None:
            self.device_before = device_used
        self.torch_peak = max(self.torch_peak, torch_used)
        self.device_peak = max(self.device_peak, device_used)

    def report(self) -> dict[str, Any]:
        mib = 1024 * 1024
        if self.device in (None, "cpu"):
            return {"vram_device": self.device}
        return {"vram_device": self.device, "peak_vram_mib": round(self.torch_peak / mib),
                "peak_device_vram_mib": round(self.device_peak / mib),
                "device_vram_before_mib": round((self.device_before or 0) / mib)}
