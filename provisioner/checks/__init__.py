"""On-host checks: the GPU and torch, the kernels (nunchaku W4A4 or FP8), and a ComfyUI smoke test.

`host_*.py` modules form the check program that runs on the host under the target venv's Python
(>= 3.8, stdlib + torch); everything else runs on the controller: it builds the request, ships the
program, and judges what comes back.
"""
