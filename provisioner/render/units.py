"""Sizes and durations as people read them."""

from __future__ import annotations

from provisioner.agent.fsutil import human_size


def human_bytes(size: int) -> str:
    """Binary units, the same the agent uses in its messages (12.7 GiB)."""
    return human_size(size)


def human_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, seconds = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
