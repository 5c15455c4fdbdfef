"""What the judged checks are held to: thresholds from the manifest, floors and wheels from the catalog."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

# Where checks.min_speedup is unset. Conservative: INT4/FP4 tensor cores peak at 4x BF16 and FP8 at 2x,
# and a check must pass on every supported GPU, power-capped and consumer boards included.
DEFAULT_MIN_SPEEDUP = {"w4a4": 1.3, "fp8": 1.2}
# Relative Frobenius error vs the torch reference. W4A4 vs BF16 activations carries the INT4 activation
# quantization (~0.1 on Gaussian data); FP8 vs its own dequantized inputs only carries BF16 output rounding.
W4A4_ERROR_BOUND = 0.25
FP8_ERROR_BOUND = 0.02


@dataclass(frozen=True)
class WantedModel:
    folder: str
    file: str

    def pattern(self) -> re.Pattern[str]:
        """The file as ComfyUI lists it; {precision} and {rank} placeholders match any value."""
        parts = re.split(r"(\{precision\}|\{rank\})", self.file)
        regex = "".join(
            "(int4|fp4)" if p == "{precision}" else r"\d+" if p == "{rank}" else re.escape(p) for p in parts
        )
        return re.compile(regex)


@dataclass(frozen=True)
class Criteria:
    expected_arch: str = "auto"
    min_bf16_tflops: float | None = None
    min_speedup: float | None = None
    tflops_floor: Callable[[str, str | None], float | None] = lambda arch, name: None
    driver_floor: Callable[[str], str | None] = lambda cuda: None
    # (nunchaku version, torch 'X.Y', cuda 'X.Y' or None, python tag) -> wheel file name that fits
    wheel_for: Callable[[str | None, str, str | None, str | None], str | None] = lambda v, t, c, p: None
    nodes: list[str] = field(default_factory=list)
    models: list[WantedModel] = field(default_factory=list)
    # The resolution the smoke test is judged against: its mode (nunchaku, plain, cpu) and nunchaku wheel.
    mode: str | None = None
    nunchaku_wheel: str | None = None
    # For the workflow's diagnosis: node class -> the plugin release that registers it, and the loader
    # inputs a manifest may set (comfyui.plugins[].settings) with their choices.
    node_providers: dict[str, str] = field(default_factory=dict)
    plugin_settings: dict[str, list[str]] = field(default_factory=dict)
    # (folder, file name, which entry installs it) for every file the resolution installs.
    installed: list[tuple[str, str, str]] = field(default_factory=list)

    def speedup_floor(self, path: str) -> float:
        return self.min_speedup if self.min_speedup is not None else DEFAULT_MIN_SPEEDUP[path]
