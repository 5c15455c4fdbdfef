"""GPU timing on the host: CUDA events around a warmed-up callable, median of repeats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def median_ms(torch: Any, func: Callable[[], Any], warmup: int = 3, repeats: int = 10, inner: int = 5) -> float:
    """Median milliseconds of one call to `func`; each sample averages `inner` back-to-back calls."""
    for _ in range(max(warmup, 1)):
        func()
    torch.cuda.synchronize()
    return _median([_sample_ms(torch, func, inner) for _ in range(max(repeats, 1))])


def paired_median_ms(torch: Any, first: Callable[[], Any], second: Callable[[], Any], warmup: int = 3,
                     repeats: int = 10, inner: int = 5) -> tuple[float, float]:
    """Median ms of two callables timed in alternating samples, so clock and thermal drift hit both alike."""
    for _ in range(max(warmup, 1)):
        first()
        second()
    torch.cuda.synchronize()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(max(repeats, 1)):
        for func, times in ((first, samples[0]), (second, samples[1])):
            times.append(_sample_ms(torch, func, inner))
    return _median(samples[0]), _median(samples[1])


def _sample_ms(torch: Any, func: Callable[[], Any], inner: int) -> float:
    """One CUDA-event-timed sample: `inner` back-to-back calls, averaged."""
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(max(inner, 1)):
        func()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end)) / max(inner, 1)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return float(ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2)


def tflops(m: int, n: int, k: int, ms: float) -> float:
    return 2.0 * m * n * k / (ms * 1e-3) / 1e12


def settings(gemm: dict[str, Any]) -> dict[str, int]:
    return {"warmup": int(gemm.get("warmup", 3)), "repeats": int(gemm.get("repeats", 10)),
            "inner": int(gemm.get("inner", 5))}


def matmul_tflops(torch: Any, device: Any, m: int, n: int, k: int, dtype: Any,
                  gemm: dict[str, Any]) -> tuple[float, float]:
    """(TFLOP/s, ms) of a dense (m x k) @ (k x n) product on random data."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(m, k, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, k, device=device, dtype=dtype, generator=generator).t()
    out = torch.empty(m, n, device=device, dtype=dtype)
    ms = median_ms(torch, lambda: torch.matmul(a, b, out=out), **settings(gemm))
    return tflops(m, n, k, ms), ms
