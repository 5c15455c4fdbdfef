"""The secret values of the request being served, masked out of every event and state file the agent writes.

The controller masks what it prints too, but error text born on the host (a download's 401, a handler that
prints its environment) also lands in generation files, which the controller never sees before they are
written: so the agent masks at the source.
"""

from __future__ import annotations

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List

MASK = "***"
#: Shorter values would mask ordinary words; the controller's masker uses the same floor.
MIN_LENGTH = 4

_secrets: List[str] = []


def remember(values: Iterable[Any]) -> None:
    for value in values:
        if isinstance(value, str) and len(value) >= MIN_LENGTH and value not in _secrets:
            _secrets.append(value)
    _secrets.sort(key=len, reverse=True)  # a secret that contains another is masked whole


def remember_request(request: Dict[str, Any]) -> None:
    """Every secret a request can carry: download tokens, env-file secrets, the rollback's secrets."""
    remember((request.get("secrets") or {}).values())
    for resource in request.get("resources") or []:
        spec = resource.get("spec") or {}
        remember([spec.get("token")])
        remember((spec.get("secret_values") or {}).values())


def mask_text(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, MASK)
    return text


def mask(value: Any) -> Any:
    """`value` with every string in it masked (dict keys too); other values unchanged."""
    if not _secrets:
        return value
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {mask(k): mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(v) for v in value]
    return value
