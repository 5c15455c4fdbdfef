"""Load nunchaku._C and run its first op in a child process, so a crash there is an observation.

An extension can load and still kill its process on the first call (one that links libstdc++ statically
segfaults beside torch's), and a wheel without SASS for the GPU loads but fails its first launch with
"no kernel image is available". The child tells the stage (load or op) and how it ended.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

TIMEOUT_SECONDS = 180

# Runs as `<venv python> -c PROBE`; its input (the extension path found on the host) arrives on stdin.
PROBE = """\
import json, sys
args = json.loads(sys.stdin.read())
def report(**fields):
    sys.stdout.write(json.dumps(fields) + "\\n")
    sys.stdout.flush()
stage = "torch"
try:
    import torch
    stage = "load"
    import importlib.util
    spec = importlib.util.spec_from_file_location("nunchaku._C", args["path"])
    module = importlib.util.module_from_spec(spec)
    report(stage="load")
    spec.loader.exec_module(module)
    ops = getattr(module, "ops", None)
    if ops is None or not hasattr(ops, "quantize_w4a4_act_fuse_lora"):
        report(stage="op", ok=True, op=None)
        sys.exit(0)
    stage = "op"
    report(stage="op")
    fp4 = args["precision"] == "fp4"
    group = 16 if fp4 else 64
    device = torch.device("cuda", args["index"])
    m, k, rank = 256, 256, 32
    x = torch.ones(m, k, dtype=torch.bfloat16, device=device)
    out = torch.empty(m, k // 2, dtype=torch.uint8, device=device)
    scales = torch.empty(k // group, m, dtype=torch.float8_e4m3fn if fp4 else torch.bfloat16, device=device)
    down = torch.zeros(k, rank, dtype=torch.bfloat16, device=device)
    lora_act = torch.empty(m, rank, dtype=torch.float32, device=device)
    smooth = torch.ones(k, dtype=torch.bfloat16, device=device)
    ops.quantize_w4a4_act_fuse_lora(x, out, scales, down, lora_act, smooth, False, fp4)
    torch.cuda.synchronize(device)
    report(stage="op", ok=True, op="quantize_w4a4_act_fuse_lora")
except Exception as exc:
    report(stage=stage, ok=False, error=type(exc).__name__ + ": " + str(exc))
"""


def probe(python: str, extension: str, index: int, precision: str | None) -> dict[str, Any]:
    """{'stage': 'load'|'op'|..., 'ok': bool, 'op', 'error', 'signal'}: how far the child got."""
    payload = json.dumps({"path": extension, "index": index, "precision": precision or "int4"})
    try:
        done = subprocess.run([python, "-c", PROBE], input=payload, capture_output=True, text=True,
                              timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        return {"stage": "op", "ok": False, "error": f"the first op did not return within {TIMEOUT_SECONDS} s"}
    except OSError as exc:
        return {"stage": "start", "ok": False, "error": f"cannot start {python}: {exc}"}
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    last: dict[str, Any] = dict(lines[-1]) if lines else {"stage": "start"}
    if "ok" in last:
        return last
    # No verdict line: the process died in the stage it announced last.
    last["ok"] = False
    if done.returncode < 0:
        number = -done.returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        last["signal"] = name
        last["error"] = f"the process was killed by {name}"
    else:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        last["error"] = f"the process exited with status {done.returncode}: " + " | ".join(tail)
    return last
