"""Run an apply's steps in parallel: each starts once what it waits for (graph.py) is done.

The main thread decides and keeps the books; worker threads run the steps. At most `parallel` steps run
at once, and of them at most `parallel_downloads` downloads (the request's options; 1 runs one step at a
time in the order given, as before). A step whose dependency failed or was skipped is skipped, naming it
(dependencies.py says which failures block what); steps already running when something fails finish, and
the branches that do not need the failed step go on, so one bad model URL does not stop ComfyUI's
checkout. Install steps on one venv that are ready at the same moment share one installer run
(install_batch.py). Every program a step runs stays in the run's process group (procs.py), so a kill of the group
stops everything. When the agent itself is stopped (SIGTERM, a lost controller: heartbeat.py) in the
middle, the running steps' programs are stopped at once, the workers unwind through their `finally`
blocks, and the stop goes on up.

Each outcome that ran carries `started` and `ended` (seconds since the epoch), the record of what
overlapped with what.
"""

from __future__ import annotations

import threading
import time

from . import dependencies, graph, install_batch, notifications, procs, removal, state
from .installers import install_parts
from .kinds import kind
from .protocol import Context, ResourceFailure, emit, log, set_step

TYPE_CHECKING = False  # see the package docstring
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Set, Tuple

DEFAULT_PARALLEL = 6
#: Downloads share one link: past a few at once they only split it further and hold disk space longer.
DEFAULT_PARALLEL_DOWNLOADS = 4
#: How long a stopped worker gets to unwind: the stop grace of its programs plus one read of a download.
JOIN_SECONDS = 15.0
_POLL_SECONDS = 0.5
_notify_lock = threading.Lock()


def limits(options: Dict[str, Any]) -> Tuple[int, int]:
    """(steps at once, downloads at once) from the request's options, refused unless whole numbers >= 1."""
    found = []
    for key, default in (("parallel", DEFAULT_PARALLEL), ("parallel_downloads", DEFAULT_PARALLEL_DOWNLOADS)):
        value = options.get(key, default)
        if value is None:
            value = default
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ResourceFailure("option %s must be a whole number >= 1, not %r" % (key, value))
        found.append(value)
    return found[0], found[1]


class Steps:
    """What the steps of one apply came to."""

    def __init__(self, count: int) -> None:
        self.outcomes: List[Optional[Dict[str, Any]]] = [None] * count
        self.broken: List[Dict[str, Any]] = []  # failed or skipped: what later resources may need
        self.remade: List[Dict[str, Any]] = []  # changed by this apply
        self.notified: List[str] = []


def run(resources: List[Dict[str, Any]], probed: List[Dict[str, Any]], ctx: Context, notified: List[str],
        probe_again: Callable[[Dict[str, Any]], Dict[str, Any]]) -> Steps:
    """Apply every resource whose probe found changes; `probe_again` re-probes one (e.g. after its venv
    was rebuilt by this apply)."""
    parallel, downloads = limits(ctx.options)
    waits = graph.build(resources)
    steps = Steps(len(resources))
    steps.notified = list(notified)
    runner = _Runner(resources, probed, ctx, probe_again, steps)
    pending = list(range(len(resources)))
    done: Set[int] = set()
    try:
        while pending or runner.running:
            for index in list(pending):
                if index not in pending:
                    continue  # it joined an install run started in this pass
                if runner.workers() >= parallel:
                    break
                if any(w not in done for w in waits[index]):
                    continue
                if resources[index]["kind"] == "download" and runner.downloads_running() >= downloads:
                    continue
                pending.remove(index)
                joined = []
                if runner.has_work(index):
                    joined = install_batch.companions(
                        index, resources, pending, lambda i, members: all(w in done or w in members for w in waits[i]),
                        runner.has_work, runner.probed_ok)
                for other in joined:
                    pending.remove(other)
                if not runner.start(index, joined):
                    done.add(index)  # settled without a worker: ok, skipped, or failed at probe
            if runner.running:
                done.update(runner.collect(_POLL_SECONDS))
            elif pending and all(any(w not in done for w in waits[i]) for i in pending):
                raise RuntimeError("steps left waiting on nothing: %s" % [resources[i]["id"] for i in pending])
    except BaseException:
        runner.stop()
        raise
    return steps


class _Runner:
    def __init__(self, resources: List[Dict[str, Any]], probed: List[Dict[str, Any]], ctx: Context,
                 probe_again: Callable[[Dict[str, Any]], Dict[str, Any]], steps: Steps) -> None:
        self.resources = resources
        self.probed = probed
        self.ctx = ctx
        self.probe_again = probe_again
        self.steps = steps
        self.running: Dict[int, threading.Thread] = {}
        self.finished: List[Tuple[int, Dict[str, Any], Optional[BaseException]]] = []
        self.wake = threading.Condition()

    def downloads_running(self) -> int:
        return sum(1 for i in self.running if self.resources[i]["kind"] == "download")

    def workers(self) -> int:
        """Worker threads running (the steps of a shared install run share one)."""
        return len({id(worker) for worker in self.running.values()})

    def has_work(self, index: int) -> bool:
        """Whether starting the step would run something: not blocked, probed fine, and changed (or
        made stale by a step this apply changed)."""
        resource, result = self.resources[index], self.probed[index]
        if self._blocker(resource) is not None or result["status"] == "error":
            return False
        return result["status"] not in ("ok", "kept") or self._again(resource)

    def probed_ok(self, index: int) -> bool:
        """Whether the step's probe found nothing to do and nothing blocks it (a re-probe may yet)."""
        return self._blocker(self.resources[index]) is None and self.probed[index]["status"] in ("ok", "kept")

    def _again(self, resource: Dict[str, Any]) -> bool:
        return any(dependencies.needs(resource, r) for r in self.steps.remade)

    def _blocker(self, resource: Dict[str, Any]) -> Optional[str]:
        after = dependencies.blocker(resource, self.steps.broken)
        if after is None:
            broken_ids = {r["id"] for r in self.steps.broken}
            after = next((r for r in resource.get("requires") or [] if r in broken_ids), None)
        return after

    def start(self, index: int, joined: Optional[List[int]] = None) -> bool:
        """Settle the step at once where nothing is to run (False), else start its worker (True); the
        `joined` steps (which have work: has_work) share its install run (install_batch.py)."""
        if joined:
            members = [index, *joined]
            worker = threading.Thread(target=self._work_together, args=(members,), daemon=True,
                                      name="install:" + "+".join(self.resources[i]["id"] for i in members))
            for member in members:
                self.running[member] = worker
            worker.start()
            return True
        resource, result = self.resources[index], self.probed[index]
        blocked_by = self._blocker(resource)
        if blocked_by is not None:
            self.steps.broken.append(resource)
            self.steps.outcomes[index] = dict(_strip(result), outcome="skipped", after=blocked_by)
            emit("progress", id=result["id"], phase="skipped", after=blocked_by)
            return False
        if result["status"] == "error":
            self.steps.broken.append(resource)
            self.steps.outcomes[index] = dict(_strip(result), outcome="failed")
            return False
        again = self._again(resource)
        if result["status"] in ("ok", "kept") and not again:
            self.steps.outcomes[index] = dict(_strip(result), outcome="ok")
            return False
        worker = threading.Thread(target=self._work, args=(index, result, again), daemon=True,
                                  name="step:" + resource["id"])
        self.running[index] = worker
        worker.start()
        return True

    def _work(self, index: int, result: Dict[str, Any], again: bool) -> None:
        resource = self.resources[index]
        set_step(resource["id"])
        outcome: Dict[str, Any] = {}
        crash: Optional[BaseException] = None
        try:
            outcome = _apply_one(resource, self.probe_again(resource) if again else result, self.ctx)
        except BaseException as exc:  # a bug, or the agent stopping: the main thread raises it
            crash = exc
        finally:
            set_step(None)
            with self.wake:
                self.finished.append((index, outcome, crash))
                self.wake.notify()

    def _work_together(self, members: List[int]) -> None:
        resources = [self.resources[i] for i in members]
        set_step(resources[0]["id"])
        outcomes: List[Dict[str, Any]] = []
        crash: Optional[BaseException] = None
        try:
            results = [self.probe_again(self.resources[i]) if self._again(self.resources[i]) else self.probed[i]
                       for i in members]
            outcomes = _apply_together(resources, results, self.ctx, self.probe_again)
        except BaseException as exc:  # a bug, or the agent stopping: the main thread raises it
            crash = exc
        finally:
            set_step(None)
            with self.wake:
                for at, index in enumerate(members):
                    self.finished.append((index, outcomes[at] if at < len(outcomes) else {}, crash))
                self.wake.notify()

    def collect(self, timeout: float) -> List[int]:
        """Wait up to `timeout` for workers to end; book what they came to and return their indexes."""
        with self.wake:
            if not self.finished:
                self.wake.wait(timeout)
            ended, self.finished = self.finished, []
        for index, outcome, crash in ended:
            self.running.pop(index).join()
            if crash is not None:
                raise crash
            resource = self.resources[index]
            self.steps.outcomes[index] = outcome
            if outcome["outcome"] == "failed":
                self.steps.broken.append(resource)
            elif outcome["outcome"] == "changed":
                self.steps.remade.append(resource)
                for handler in resource.get("notify") or []:
                    if handler not in self.steps.notified:
                        self.steps.notified.append(handler)
        return [index for index, _, _ in ended]

    def stop(self) -> None:
        """Stop the programs of every running step and give the workers a bounded time to unwind."""
        procs.stop_all()
        deadline = time.monotonic() + JOIN_SECONDS
        for worker in list(self.running.values()):
            worker.join(max(0.0, deadline - time.monotonic()))


def _apply_one(resource: Dict[str, Any], result: Dict[str, Any], ctx: Context) -> Dict[str, Any]:
    """Apply one resource in a worker thread; its outcome row."""
    if result["status"] == "error":
        return dict(_strip(result), outcome="failed")
    if result["status"] in ("ok", "kept"):  # kept: large data that goes only with --prune
        return dict(_strip(result), outcome="ok")
    started = time.time()
    emit("progress", id=result["id"], phase="applying", changes=result["changes"], at=round(started, 3))
    with _notify_lock:  # written down before the change is made (notifications.py)
        notifications.expect(ctx, resource.get("notify") or [])
    try:
        if result["status"] == "destroy":  # state: absent
            removal.destroy(resource, result["observed"], ctx)
        else:
            kind(resource["kind"]).apply(resource["spec"], result["observed"], result["changes"], ctx)
    except (ResourceFailure, OSError) as exc:
        ended = time.time()
        emit("progress", id=result["id"], phase="failed", error=str(exc), at=round(ended, 3))
        return dict(_strip(result), outcome="failed", error=str(exc), started=round(started, 3),
                    ended=round(ended, 3))
    ended = time.time()
    seconds = round(ended - started, 3)
    emit("progress", id=result["id"], phase="changed", seconds=seconds, at=round(ended, 3))
    return dict(_strip(result), outcome="changed", seconds=seconds, started=round(started, 3), ended=round(ended, 3))


def _apply_together(resources: List[Dict[str, Any]], results: List[Dict[str, Any]], ctx: Context,
                    probe_again: Callable[[Dict[str, Any]], Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Apply install steps on one venv with one installer run (install_batch.py); an outcome per step, in
    order. If the shared run fails, each step is re-probed and applied on its own. The steps without work
    (passengers) are settled after the run, re-probed first when it changed the venv they share."""
    outcomes: List[Optional[Dict[str, Any]]] = [None] * len(resources)
    todo = [at for at, result in enumerate(results) if result["status"] not in ("ok", "kept", "error")]
    if len(todo) == 1:
        outcomes[todo[0]] = _apply_one(resources[todo[0]], results[todo[0]], ctx)
    elif todo:
        started = time.time()
        for at in todo:
            emit("progress", id=results[at]["id"], phase="applying", changes=results[at]["changes"],
                 at=round(started, 3))
            with _notify_lock:
                notifications.expect(ctx, resources[at].get("notify") or [])
        log("installing %s in one run" % ", ".join(resources[at]["id"] for at in todo))
        try:
            parts = [kind(resources[at]["kind"]).prepare_install(resources[at]["spec"], results[at]["observed"],
                                                                  results[at]["changes"], ctx) for at in todo]
            install_parts([part for part in parts if part is not None], stream=ctx.verbose)
        except (ResourceFailure, OSError) as exc:
            log("the shared install failed; installing each step on its own to see which one fails (%s)"
                % (str(exc).splitlines() or ["?"])[0])
            for at in todo:
                outcomes[at] = _apply_one(resources[at], probe_again(resources[at]), ctx)
        else:
            ended = time.time()
            seconds = round(ended - started, 3)
            for at in todo:
                emit("progress", id=results[at]["id"], phase="changed", seconds=seconds, at=round(ended, 3))
                outcomes[at] = dict(_strip(results[at]), outcome="changed", seconds=seconds,
                                    started=round(started, 3), ended=round(ended, 3))
    remade = [resources[at] for at in todo if (outcomes[at] or {}).get("outcome") == "changed"]
    for at, result in enumerate(results):
        if outcomes[at] is None:
            if result["status"] in ("ok", "kept") and any(dependencies.needs(resources[at], r) for r in remade):
                result = probe_again(resources[at])
            outcomes[at] = _apply_one(resources[at], result, ctx)
    return [outcome for outcome in outcomes if outcome is not None]


def reprobe_with(ctx: Context, probe_one: Callable[..., Dict[str, Any]],
                 request: Dict[str, Any]) -> Callable[[Dict[str, Any]], Dict[str, Any]]:
    """A re-probe of one resource against the generations as they stand now."""
    return lambda resource: probe_one(resource, ctx, state.converged_digests(ctx.state_dir()), request)


def _strip(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("observed", "observed_digest")}
