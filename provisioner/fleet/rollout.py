"""Rollout arithmetic as pure functions: batch sizes (Ansible's `serial`), the canary batch, max-fail.

The rules follow Ansible's so that a rollout behaves the way its operators expect:

- `serial` is an int, a percentage ("25%") or a list of either; the last entry repeats until every host
  is in a batch. A percentage is of the hosts being rolled out, rounded down, and never below 1 host.
  0 or "100%" means one batch of everything.
- `max_fail_percentage` is judged per batch and aborts only when *exceeded*: with 10 hosts in a batch and
  20%, 2 failures continue and 3 abort. Without it, only a batch in which every host failed aborts.
- A canary batch is any failure stops: it exists to find the problem before the fleet does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

SerialItem = int | str
_PERCENT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")


def check_serial_item(value: SerialItem) -> SerialItem:
    """Accept a non-negative int or a 'N%' string (0 < N <= 100); raise ValueError with the fix otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a batch size: use a host count (5) or a percentage ('25%')")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"batch size {value} is negative: use a host count (5) or a percentage ('25%')")
        return value
    match = _PERCENT.match(value)
    if not match or not 0 < float(match.group(1)) <= 100:
        raise ValueError(f"{value!r} is not a batch size: use a host count (5) or a percentage between 1% and 100%")
    return value.strip()


def size_of(item: SerialItem, total: int) -> int:
    """Hosts in a batch of `item` out of `total`: percentages round down but never below one host."""
    if isinstance(item, str):
        match = _PERCENT.match(item)
        assert match, item
        size = int(float(match.group(1)) * total / 100)
        size = max(size, 1)
    else:
        size = item
    # 0 means "no batching", as in Ansible.
    return total if size <= 0 or size > total else size


def batch_sizes(serial: SerialItem | Sequence[SerialItem], total: int) -> list[int]:
    """Sizes of consecutive batches covering `total` hosts; the last serial entry repeats."""
    items: list[SerialItem] = [serial] if isinstance(serial, int | str) else list(serial)
    if not items:
        items = [0]
    sizes: list[int] = []
    remaining = total
    index = 0
    while remaining > 0:
        size = min(size_of(items[min(index, len(items) - 1)], total), remaining)
        sizes.append(size)
        remaining -= size
        index += 1
    return sizes


@dataclass(frozen=True)
class Batch(Generic[T]):
    number: int
    hosts: tuple[T, ...]
    canary: bool = False


def plan_batches(hosts: Sequence[T], serial: SerialItem | Sequence[SerialItem],
                 canary: SerialItem | None = None) -> list[Batch[T]]:
    """Split `hosts` (in order) into an optional canary batch, then `serial` batches over the rest.

    The canary's size is taken from all hosts; serial percentages are of the hosts after the canary.
    """
    batches: list[Batch[T]] = []
    rest = list(hosts)
    if canary is not None and rest:
        size = size_of(canary, len(rest))
        batches.append(Batch(1, tuple(rest[:size]), canary=True))
        rest = rest[size:]
    start = 0
    for size in batch_sizes(serial, len(rest)):
        batches.append(Batch(len(batches) + 1, tuple(rest[start:start + size])))
        start += size
    return batches


def exceeds_max_fail(failed: int, batch_size: int, max_fail_percentage: float | None) -> bool:
    """True when this batch's failures should abort the rollout.

    Exactly at the threshold continues. The comparison avoids float division so that, say, 1 of 3 hosts
    against 33.333...% lands on the side the numbers say.
    """
    if batch_size <= 0 or failed <= 0:
        return False
    if max_fail_percentage is None:
        return failed >= batch_size
    return failed * 100 > max_fail_percentage * batch_size


def should_abort(failed: int, batch_size: int, canary: bool, max_fail_percentage: float | None) -> bool:
    """A canary batch stops on any failure; other batches follow max_fail_percentage."""
    if canary:
        return failed > 0
    return exceeds_max_fail(failed, batch_size, max_fail_percentage)
