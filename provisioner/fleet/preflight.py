"""Fleet preflight: every host is resolved and planned (read-only) before the first change anywhere.

A host the manifest does not fit (an RTX 3090 under an sm_89 manifest, a path its probe refuses) stops
the rollout before the canary, by name and with the violation. An unreachable host does not: being down
is not a property of the manifest, and the rollout's max-fail rules already judge it in its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from provisioner.agent_client import AgentClient
from provisioner.errors import ProvisionError, TransportError
from provisioner.fleet.sessions import PreparedHost

#: (host, phase, message): shown as progress.
Progress = Callable[[str, str, str], None]


@dataclass
class PreflightResult:
    #: Host name -> why the manifest cannot be applied there.
    refused: dict[str, str] = field(default_factory=dict)
    #: Hosts that could not be reached; their batch tries them again.
    unreachable: list[str] = field(default_factory=list)
    #: Host name -> its newest generation before this rollout (0: none), when rollback needs to know.
    newest_generation: dict[str, int] = field(default_factory=dict)

    def abort_reason(self) -> str | None:
        if not self.refused:
            return None
        lines = [f"  {name}: {reason}" for name, reason in self.refused.items()]
        return (f"preflight refused {', '.join(self.refused)}: the rollout was not started and no host was "
                "changed\n" + "\n".join(lines))


def preflight(hosts: Sequence[PreparedHost], forks: int, progress: Progress,
              want_generations: bool) -> PreflightResult:
    """Plan every host (at most `forks` at once); the result says which hosts refuse the manifest."""
    result = PreflightResult()
    if not hosts:
        return result
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts))), thread_name_prefix="preflight") as pool:
        outcomes = list(pool.map(lambda host: _plan_host(host, want_generations), hosts))
    for prepared, (status, detail, newest) in zip(hosts, outcomes, strict=True):
        if status == "refused":
            result.refused[prepared.name] = detail
            progress(prepared.name, "preflight", f"REFUSED: {detail}")
        elif status == "unreachable":
            result.unreachable.append(prepared.name)
            progress(prepared.name, "preflight", f"unreachable, tried again in its batch: {detail}")
        else:
            progress(prepared.name, "preflight", detail)
        if newest is not None:
            result.newest_generation[prepared.name] = newest
    return result


def _plan_host(prepared: PreparedHost, want_generations: bool) -> tuple[str, str, int | None]:
    """('ok' | 'refused' | 'unreachable', what to say, newest generation or None)."""
    try:
        report = prepared.session.plan()
        newest = _newest_generation(prepared) if want_generations else None
    except TransportError as exc:
        return "unreachable", prepared.mask(str(exc)), None
    except ProvisionError as exc:
        return "refused", prepared.mask(_concise(str(exc))), None
    except Exception as exc:  # a bug: it stops the rollout here rather than in a batch
        return "refused", prepared.mask(f"internal error: {exc!r}"), None
    if report.errors:
        errors = "; ".join(f"{r['id']}: {str(r.get('error') or 'error').strip()}" for r in report.errors)
        return "refused", prepared.mask(errors), newest
    return "ok", f"{len(report.pending)} to change", newest


def _newest_generation(prepared: PreparedHost) -> int:
    target = prepared.target
    records = AgentClient(prepared.transport, python=target.python).call(
        "generations", {"root": target.root})["generations"]
    return max((g["generation"] for g in records if g), default=0)


def _concise(message: str) -> str:
    """The violations of a resolution refusal without its banner (the host is named by the caller)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    violations = [line for line in lines if (line[:1].isdigit() and ". " in line[:5]) or line.startswith("fix:")]
    return "; ".join(violations) if violations else " ".join(lines)
