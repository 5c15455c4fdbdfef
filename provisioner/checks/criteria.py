"""What the judged checks are held to: thresholds from the manifest, floors and wheels from the catalog."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from provisioner.catalog import Catalog, arch_number, load_catalog

# Where checks.min_speedup is unset (and, for W4A4, the catalog names no floor for the arch). Conservative:
# INT4/FP4 tensor cores peak at 4x BF16 and FP8 at 2x, and a check must pass on every supported GPU,
# power-capped and consumer boards included.
DEFAULT_MIN_SPEEDUP = {"w4a4": 1.3, "fp8": 1.2}
# Relative Frobenius error vs the torch reference: FP8 vs its own dequantized inputs only carries BF16
# output rounding. W4A4's bound depends on K and the precision (W4A4Rules.error_bound).
FP8_ERROR_BOUND = 0.02
INT4_GROUP = 64


@dataclass(frozen=True)
class W4A4Rules:
    """What kernels.w4a4_gemm holds each arch to: the catalog's kernel_check data."""

    bf16_rounding: float
    safety: float
    bf16_accumulation: tuple[str, ...]
    native_min_speedup: dict[str, float]
    emulated: dict[str, str]

    def error_bound(self, precision: str, in_features: int) -> float:
        """safety x the RMS error of the kernel's roundings: a random walk over the K/64 groups where the
        kernel accumulates them in bf16, else the output rounding alone."""
        rms = self.bf16_rounding
        if precision in self.bf16_accumulation:
            rms *= math.sqrt(1 + (in_features // INT4_GROUP) / 2)
        return round(self.safety * rms, 4)

    def speed_floor(self, arch: str | None, manifest_floor: float | None) -> float | None:
        """The speedup a native arch must reach; None where INT4 is emulated (speed is reported, not judged)."""
        base = _arch_key(arch)
        if base in self.emulated:
            return None
        if manifest_floor is not None:
            return manifest_floor
        return self.native_min_speedup.get(base or "", DEFAULT_MIN_SPEEDUP["w4a4"])


def _arch_key(arch: str | None) -> str | None:
    number = arch_number(arch) if arch else None
    return f"sm_{number}" if number is not None else arch


def w4a4_rules(catalog: Catalog) -> W4A4Rules:
    data = catalog.nunchaku.kernel_check
    return W4A4Rules(bf16_rounding=data.error.bf16_rounding, safety=data.error.safety,
                     bf16_accumulation=tuple(data.error.bf16_accumulation),
                     native_min_speedup=dict(data.native_min_speedup),
                     emulated=catalog.emulated_int4())


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
    # Where the resolution builds nunchaku on the host: the fix to name instead of a release wheel.
    built_on_host: str | None = None
    # For the workflow's diagnosis: node class -> the plugin release that registers it, and the loader
    # inputs a manifest may set (comfyui.plugins[].settings) with their choices.
    node_providers: dict[str, str] = field(default_factory=dict)
    plugin_settings: dict[str, list[str]] = field(default_factory=dict)
    # (folder, file name, which entry installs it) for every file the resolution installs.
    installed: list[tuple[str, str, str]] = field(default_factory=list)
    w4a4: W4A4Rules = field(default_factory=lambda: w4a4_rules(load_catalog()))

    def speedup_floor(self, path: str) -> float:
        return self.min_speedup if self.min_speedup is not None else DEFAULT_MIN_SPEEDUP[path]
