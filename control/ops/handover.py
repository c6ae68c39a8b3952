"""`rendezvous upgrade external-state|rendezvous`: the seed's upgrade protocol ("Upgrading the Rendezvous System"),
on Flink. A new version of a thread-mode job takes over from the running one without a gap in the output:

1. check: the new code takes the running job's settings and reads every state encoding its savepoint may hold
   (`control.ops.upgrade.check`); nothing is touched otherwise;
2. snapshot token: a savepoint of the running version, taken without stopping it;
3. the new version starts from that savepoint, quiescent (it owns no record: `takes_over`), on TaskManagers of
   its own with its own code, under its own name and consumer group, at a lower CPU priority than the version
   serving (`STARTING_NICE`, when this process may give it back); it catches up from the savepoint's offsets
   (the external state's features follow every request; the rendezvous sees every request and score) and is
   caught up (snapshot-complete) when its committed offsets reach the input's end at the snapshot and it then
   keeps up with its inputs (`keep_up`: what was written while it started); started at a lower priority, it may keep
   that priority until its JVMs' JIT compilers are quiet too (`COMPILERS_QUIET_WAIT_S`, not by default); it writes
   what it would for the live requests as a shadow, into its own topic, until its tokens, and gets `SHADOW_S` more of
   that once it keeps up (its output path warm when it takes over); until a token names it, any failure cancels it
   and leaves the old version untouched;
4. transition tokens: one per partition of the input (`requests` for the external state, `requests.augmented` for
   the rendezvous: it reads its tokens from its input directly, so the model jobs pass nothing), naming the new
   version; where each landed goes to the transitions registry. Every record after a token is the new version's,
   every record before it the old one's (jobs/common/transition.py): the old external state stops augmenting at
   the token and the new one starts; the old rendezvous stops opening mailboxes at the token and answers the ones
   it has, the new one opens mailboxes from the token on;
5. the old version has passed every token (its committed offsets are past them); the rendezvous's last mailbox has
   closed by the longest deadline of the schedules after that; the old version is then stopped with a savepoint,
   its TaskManagers first given the lowest CPU priority (`RETIRING_NICE`): it serves nothing any more.

Each step is a lifecycle event (`upgrade`, `detail.step`). `--rollback` hands back the same way, to the code the
last upgrade came from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from control import kafka_io
from control.errors import ControlError
from control.ops import deploy, upgrade
from control.ops import jobs as jobs_lib
from control.runtime import jit, pinned, priority
from control.runtime.kafka import grant, last_mode
from control.security import Grant, principal
from control.settings import RuntimeSettings
from jobs.common.entry import SETTINGS
from jobs.common.settings import HandedOverJob
from jobs.common.transition import registry_record, token_json
from jobs.external_state.settings import ExternalStateSettings
from jobs.rendezvous.settings import RendezvousSettings
from schemas.records import LifecycleEvent, Schedule, TokenPosition, now_ms
from schemas.topics import LIFECYCLE, TRANSITIONS, TopicSpec, shadow_topic

STARTING_NICE = 19
"""The CPU priority the hand-over works at and the new version starts at (the checks, `flink run` compiling it, its
TaskManagers and interpreter starting, the catch-up), so that the version serving keeps the CPU (2 cores: starting a
JVM and an interpreter otherwise shows in every answer's latency). `flink run` and the TaskManagers are started at this
priority and, where this process may, in the CPU group of this priority (control.runtime.priority: where the kernel
shares the CPU between sessions first, a nice value alone ranks them only within the session of `rendezvous
upgrade`); the new version's TaskManagers get the normal priority back, and leave the group, before the tokens are
written. 19 rather than 10 since a run alternating the two (bench.handover --starting-nice 10 --also-starting-nice
19, 2 cores, 2026-12-07): the transition's p99 over the minute before 1.71 against 2.35 (rendezvous) and 1.57 against
2.25 (external state), medians of 2, the new versions running about as soon (25-28 s against 22-29 s)."""

RETIRING_NICE = 19
"""The CPU priority the old version's TaskManagers are given once it has nothing left to serve (past its tokens and,
for the rendezvous, its last mailbox closed), before it is stopped: its last savepoint and its TaskManagers' shutdown
then take only CPU the version serving does not use (their threads' nice value, and the CPU group of it where this
process may: control.runtime.priority). (Lowering a nice value needs no privilege.)"""

COMPILERS_QUIET_WAIT_S = 60.0
"""A bound for `hand_over(compilers_quiet_timeout_s=...)` (`rendezvous upgrade --wait-for-jit`): how long at most the
hand-over waits, once the new version keeps up and before it gets the normal priority back, for the JIT compilers of
its TaskManagers' JVMs to go quiet (control.runtime.jit), so that their work is done at the lower priority rather than
beside the answers after the tokens. Not waited for by default: measured (bench.handover --compilers-quiet alternate,
2 cores, 2026-12-07), neither the transition's p99 nor the new version's compiler CPU in the 13 s after its tokens
differed within the machine's noise, and the wait made each hand-over 15-46 s longer."""

HOLD_COMPILERS_S = 30.0
"""For `hand_over(hold_compilers_s=...)` (`rendezvous upgrade --hold-jit S`): the new version's optimizing (C2) JIT
compiler threads stay at the lowest CPU priority (`RETIRING_NICE`, and its CPU group) from when its TaskManagers get
the normal priority back, before the tokens, until the old version has stopped and then, at most this long, until
they are quiet (control.runtime.jit.HeldCompilers): they then yield the CPU to the threads that answer while the
new version takes its first requests. 0: not held.
Measured (bench.handover --hold-jit alternate, 2 cores, 2026-12-07): the transition's p99 over the minute before went
from 3.38 to 2.16 (rendezvous) and from 2.41 to 1.44 (external state), with no bump in the 20 s after."""

SHADOW_S = 10.0
"""For `hand_over(shadow_s=...)` (`rendezvous upgrade --shadow S`): a new version writes what it would for the live
requests it does not own yet into a shadow topic (`HandedOverJob.shadow_topic`, `schemas.topics.shadow_topic` of its
output: the rendezvous's answers, by jobs/rendezvous/core.py `on_shadow_request`; the external state's augmented
requests), from when it starts until its tokens; once it keeps up, the hand-over gives it this long more, still at the
starting priority, before the tokens, so that its output path (the rendezvous's timers too) and sink have run, and
their hottest code has been compiled, before it writes for real. 0: no shadow.
Measured (bench.handover --shadow alternate, 2 cores, 2026-12-07, busy days): the rendezvous's transition p99 over
the minute before 1.18 with, 2.34 without (--rounds 6, medians of 3), and 1.29 with, 2.19 without (--rate 60 --rounds
4, medians of 2); the external state's 0.99 with, 1.08 without (the latter run), within the noise: the same ratio
over load alone went from 0.53 to 1.03 in that run."""

PROMOTE_AT_TOKENS = False
"""For `hand_over(promote_at_tokens=...)`: when the versions change priorities. False: the new version's TaskManagers
get the normal priority back before the tokens are written (once it keeps up), and the old version's the lowest once
it has passed its tokens and, for the rendezvous, its last mailbox has closed; both run at the normal priority in
between. True: both at once, as soon as the tokens are written: the new version at the starting priority until then,
the old one at the lowest while it finishes what came before its tokens. Not the default: measured (bench.handover
--promote-at-tokens alternate, 2 cores, 2026-12-07), the transition's p99 over the minute before was 2.00 and 1.49
(rendezvous, external state) with it, 1.75 and 1.47 without (README, "Latency through a hand-over", 10.)."""

LOWER_JOBMANAGER = True
"""For `hand_over(lower_jobmanager=...)`: the runtime's own JobManager works at `RETIRING_NICE` (and in its CPU group)
while the old version is stopped (its savepoint, its job's end, its TaskManagers' shutdown), and gets its priority
back after. Stopping a job is 0.8-0.9 CPU s of the JobManager's (bench.jobstop, with the quick JIT compiler only),
bursts of up to a whole core within the few seconds after the savepoint, at the normal priority, where the hand-overs'
slow answers were (README, "Latency through a hand-over", sections 11 and 13); no record waits on the JobManager.
Only where this process may give the priority back (`priority.can_renice`) and the JobManager is this runtime's (its
pid file names a live Flink cluster entrypoint: not a remote or containerised one)."""

JOBMANAGER_LOWERED = "jobmanager-lowered.pid"
"""In the runtime's pid directory while a hand-over holds the JobManager lowered: that process's pid (a later hand-over
that finds it dead gives the JobManager its priority back first)."""

KINDS: dict[str, type[HandedOverJob]] = {"external-state": ExternalStateSettings, "rendezvous": RendezvousSettings}


def successor_names(settings: HandedOverJob) -> tuple[str, str]:
    """The next version's owner name and consumer group: `<job name>#<n+1>`, `<group>#<n+1>` (n: 1 for a job that
    was never handed over)."""
    owner = settings.owner_name
    m = re.fullmatch(r"(.*)#(\d+)", owner)
    n = int(m.group(2)) if m else 1
    base_group = re.sub(r"#\d+$", "", settings.group_id)
    return f"{settings.job_name}#{n + 1}", f"{base_group}#{n + 1}"


def local_jobmanager(s: RuntimeSettings) -> int | None:
    """The pid of this runtime's JobManager, when its pid file names a live Flink cluster entrypoint."""
    from control.runtime.flink import flink_pid_files
    from control.runtime.process import read_pid

    pid = read_pid(flink_pid_files(s)["jobmanager"])
    if not pid:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if any(a.endswith(b"ClusterEntrypoint") for a in cmdline) else None


@contextlib.contextmanager
def jobmanager_lowered(s: RuntimeSettings, nice: int):
    """Run the block with this runtime's JobManager at `nice` (every thread, and its CPU group: priority.set_process),
    then give it the priority it had (`LOWER_JOBMANAGER`); yields whether it was lowered."""
    pid = local_jobmanager(s) if nice > 0 and priority.can_renice() else None
    if pid is None:
        yield False
        return
    mark = s.pid_dir / JOBMANAGER_LOWERED
    held = _lowered_by(mark)
    if held is not None and not _alive(held[0], held[1]):  # a hand-over killed while it held the JobManager lowered
        priority.set_process(pid, held[2])
        mark.unlink(missing_ok=True)
    try:
        before = os.getpriority(os.PRIO_PROCESS, pid)
    except OSError:
        yield False
        return
    if before >= nice:  # that low already (another hand-over's stop under way, or its owner's choice): left as it is
        yield False
        return
    me = os.getpid()
    mark.write_text(f"{me} {_started(me)} {before}")
    priority.set_process(pid, nice)
    try:
        yield True
    finally:
        priority.set_process(pid, before)
        if (_lowered_by(mark) or (None,))[0] == me:  # not another hand-over's mark, written since
            mark.unlink(missing_ok=True)


def _started(pid: int) -> str:
    """When the process started (psutil's create time): a pid with another start time is another process."""
    import psutil

    try:
        return repr(psutil.Process(pid).create_time())
    except psutil.Error:
        return ""


def _alive(pid: int, started: str) -> bool:
    return bool(started) and _started(pid) == started


def _lowered_by(mark: Path) -> tuple[int, str, int] | None:
    """(pid, start time, the JobManager's priority before) of the hand-over that holds it lowered, from its mark."""
    try:
        pid, started, before = mark.read_text().split()
        return int(pid), started, int(before)
    except (OSError, ValueError):
        return None


def running_job(kind: str, s: RuntimeSettings, job_name: str | None = None) -> str:
    """The id of the one running job of this kind (by job name; default: the kind's default name)."""
    cls = KINDS[kind]
    name = job_name or cls.model_fields["job_name"].default
    found = [j.job_id for j in jobs_lib.list_jobs(s) if j.state == "RUNNING" and j.name == name]
    if len(found) != 1:
        raise ControlError(f"{'no' if not found else len(found)} running job named {name!r} "
                           f"({', '.join(found) or 'see `rendezvous job list`'}): name the one to upgrade with --job")
    return found[0]


def savepoint(job_id: str, s: RuntimeSettings, timeout: float = 180.0) -> str:
    """A savepoint of the running job, which goes on running (the snapshot token); its path."""
    trig = jobs_lib.flink_rest(s, f"/jobs/{job_id}/savepoints", method="POST",
                               body={"target-directory": f"file://{s.savepoint_dir}", "cancel-job": False,
                                     "formatType": "CANONICAL"})
    return _done(jobs_lib.await_operation(s, f"/jobs/{job_id}/savepoints/{trig['request-id']}", timeout,
                                          f"savepoint of {job_id}"), f"savepoint of {job_id}")["location"]


def checkpoint(job_id: str, s: RuntimeSettings, timeout: float = 120.0) -> None:
    """Take a checkpoint now (its completion commits the sources' offsets to the job's consumer group)."""
    trig = jobs_lib.flink_rest(s, f"/jobs/{job_id}/checkpoints", method="POST", body={})
    _done(jobs_lib.await_operation(s, f"/jobs/{job_id}/checkpoints/{trig['request-id']}", timeout,
                                   f"checkpoint of {job_id}"), f"checkpoint of {job_id}")


def _done(op: dict, what: str) -> dict:
    if "failure-cause" in op:
        raise ControlError(f"{what} failed: {json.dumps(op['failure-cause'])[:2000]}")
    return op


Positions = dict[tuple[str, int], int]
"""Offsets by (topic, partition)."""


def end_offsets(s: RuntimeSettings, topics: list[str]) -> Positions:
    tps = kafka_io.topic_partitions(s.bootstrap_servers, topics)
    c = kafka_io.consumer(s.bootstrap_servers, enable_auto_commit=False, group_id=None)
    try:
        return {(tp.topic, tp.partition): off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def committed(s: RuntimeSettings, group: str, positions: list[tuple[str, int]]) -> Positions:
    """The group's committed offsets of these partitions (-1: none)."""
    from kafka import TopicPartition

    c = kafka_io.consumer(s.bootstrap_servers, enable_auto_commit=False, group_id=group)
    try:
        return {(t, p): (c.committed(TopicPartition(t, p)) or -1) for t, p in positions}
    finally:
        c.close()


def wait_committed(job_id: str, s: RuntimeSettings, group: str, at_least: Positions, timeout: float,
                   what: str) -> float:
    """Checkpoint the job until its group's committed offsets reach `at_least` in every partition; seconds taken."""
    t0 = time.monotonic()
    while True:
        checkpoint(job_id, s)
        got = committed(s, group, sorted(at_least))
        # a partition with nothing to read (end offset 0) is never committed by the source (-1): nothing is missing
        if all(got[tp] >= off or off <= 0 for tp, off in at_least.items()):
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise ControlError(f"{what}: after {timeout:.0f} s job {job_id} has committed {got}, not yet {at_least}; "
                               "it is still running: look at it (`rendezvous job list`), then retry")
        time.sleep(0.5)


KEPT_UP_S = 2.0
"""A new version keeps up with its inputs when its committed offsets reach their ends as of just before within this
(about one checkpoint: it reads as fast as they are written)."""
KEEP_UP_ROUNDS = 5


def keep_up(job_id: str, s: RuntimeSettings, group: str, topics: list[str], timeout: float, what: str) -> float:
    """Wait until the job reads its inputs as fast as they are written: rounds of `wait_committed` to the inputs'
    ends as of the round's start, until one takes at most KEPT_UP_S (or after KEEP_UP_ROUNDS, still converging: the
    hand-over goes on, the new version's first answers are then later). Seconds taken.

    Caught up to the snapshot is not enough: the new version took tens of seconds to start, and what was written
    meanwhile is still ahead of it; a token written then would hand it requests it reaches only seconds later."""
    t0 = time.monotonic()
    for _ in range(KEEP_UP_ROUNDS):
        took = wait_committed(job_id, s, group, end_offsets(s, topics), max(10.0, timeout - (time.monotonic() - t0)),
                              what)
        if took <= KEPT_UP_S:
            break
    return time.monotonic() - t0


def write_tokens(s: RuntimeSettings, topics: list[str], upgrade_id: str, owner: str, previous: str,
                 registry_topic: str) -> dict[str, list[TokenPosition]]:
    """One transition token into every partition of each topic; where they landed goes to the registry."""
    p = kafka_io.producer(s.bootstrap_servers, acks="all")
    out: dict[str, list[TokenPosition]] = {}
    try:
        at = now_ms()
        futures = {(t, part): p.send(t, token_json(upgrade_id, t, part, owner, previous, at).encode(), partition=part)
                   for t, part in sorted(end_offsets(s, topics))}
        p.flush()
        for (t, part), f in futures.items():
            out.setdefault(t, []).append(TokenPosition(upgrade_id=upgrade_id, partition=part,
                                                       offset=f.get(timeout=30).offset, owner=owner, written_at_ms=at))
        current = deploy.registry_records(s, registry_topic)
        for t, positions in out.items():
            p.send(registry_topic, registry_record(current.get(t), t, positions).to_json().encode(),
                   key=t.encode()).get(timeout=30)
    finally:
        p.close()
    return out


def abandon(job_id: str, s: RuntimeSettings) -> None:
    """Cancel a new version no token names yet (its TaskManagers stop with it); best effort: it may have failed
    already, or the JobManager may be what went wrong."""
    try:
        jobs_lib.cancel(job_id, s)
    except Exception:  # noqa: BLE001
        pass


def longest_deadline_ms(s: RuntimeSettings, settings: RendezvousSettings) -> int:
    """The longest last-stage deadline of the schedules the rendezvous may be answering by (a mailbox's life)."""
    longest = settings.builtin_schedule.stages[-1].deadline_ms
    for _, value in kafka_io.read_to_end(s.bootstrap_servers, settings.schedules_topic):
        try:
            longest = max(longest, Schedule.parse(value).stages[-1].deadline_ms)
        except (ValueError, TypeError):
            continue
    return longest


@dataclass
class HandOver:
    kind: str
    upgrade_id: str
    from_job_id: str
    job_id: str
    owner: str
    previous: str
    snapshot: str
    tokens: dict[str, list[TokenPosition]]
    """Where the transition tokens landed, by topic."""
    old_savepoint: str
    timings_s: dict[str, float] = field(default_factory=dict)
    shadow_records: int | None = None
    """How many records (answers, augmented requests) the new version had written as a shadow by its
    snapshot-complete step, just before its tokens (None: it did not shadow)."""
    jobmanager_lowered: bool = False
    """Whether the JobManager worked at the lowest priority while the old version stopped (`LOWER_JOBMANAGER`)."""


def code_of(digest: str | None, s: RuntimeSettings, lifecycle_topic: str) -> Path:
    """A directory holding the code with this digest: the checkout, or the code of an earlier upgrade."""
    candidates = [s.home]
    for _, value in kafka_io.read_to_end(s.bootstrap_servers, lifecycle_topic):
        try:
            e = LifecycleEvent.parse(value)
        except ValueError:
            continue
        if e.kind == "upgrade" and e.detail.get("code_dir"):
            candidates.append(Path(e.detail["code_dir"]))
    for c in candidates:
        if c.is_dir() and (c / "jobs").is_dir() and jobs_lib.sources_digest(c) == digest:
            return c
    raise ControlError(f"no directory with the code {str(digest)[:12]} the job was upgraded from (the checkout and "
                       "earlier upgrades' code differ): pass it with --code DIR")


def previous_code(job_id: str, s: RuntimeSettings, lifecycle_topic: str = LIFECYCLE) -> Path:
    """For `--rollback`: the code the running job's version took over from (its upgrade's lifecycle record)."""
    for _, value in reversed(kafka_io.read_to_end(s.bootstrap_servers, lifecycle_topic)):
        try:
            e = LifecycleEvent.parse(value)
        except ValueError:
            continue
        if e.kind == "upgrade" and e.job_id == job_id and e.detail.get("step") == "completed":
            return code_of(e.detail.get("from_code"), s, lifecycle_topic)
    raise ControlError(f"job {job_id} did not take over from another version (no completed `upgrade` of it in "
                       f"{lifecycle_topic}): there is nothing to roll back to; deploy the code you want with --code")


def hand_over(job_id: str, code: Path | None = None, s: RuntimeSettings | None = None,
              progress: Callable[[str], None] | None = None, lifecycle_topic: str = LIFECYCLE,
              registry_topic: str | None = None, catch_up_timeout: float = 300.0, rollback: bool = False,
              starting_nice: int = STARTING_NICE,
              compilers_quiet_timeout_s: float = 0.0, hold_compilers_s: float = HOLD_COMPILERS_S,
              shadow_s: float = SHADOW_S, promote_at_tokens: bool = PROMOTE_AT_TOKENS,
              lower_jobmanager: bool = LOWER_JOBMANAGER) -> HandOver:
    """Hand the running external-state or rendezvous job `job_id` over to a new version from `code` (module doc).

    `starting_nice`: when this process may give a priority back (`priority.can_renice`), the thread running the
    hand-over works at this lower CPU priority throughout (its checks, which import the new code, the source bundle),
    and so do `flink run` and the new version's TaskManagers, born in its CPU group (`priority.lowered`); the new
    version's TaskManagers get the normal priority back once it keeps up (and, if `compilers_quiet_timeout_s` > 0, its
    JIT compilers are quiet, or that many seconds have passed: `COMPILERS_QUIET_WAIT_S`), except, if
    `hold_compilers_s` > 0, their optimizing compilers, which stay at the lowest priority until the old version has
    stopped and then until they are quiet, at most that many seconds (`HOLD_COMPILERS_S`); 0: everything at the
    caller's priority. `shadow_s` > 0: the new version writes as a shadow until its tokens, and that many seconds
    more once it keeps up (`SHADOW_S`). `promote_at_tokens`: the new version gets the normal priority back, and the old
    one the lowest, as soon as the tokens are written, rather than the new one before them and the old one once it
    serves nothing (`PROMOTE_AT_TOKENS`). `lower_jobmanager`: the JobManager at the lowest priority while the old
    version stops (`LOWER_JOBMANAGER`)."""
    nice = starting_nice if priority.can_renice() else 0
    with priority.lowered(nice):
        return _hand_over(job_id, code, s, progress, lifecycle_topic, registry_topic, catch_up_timeout, rollback, nice,
                          compilers_quiet_timeout_s, hold_compilers_s, shadow_s, promote_at_tokens, lower_jobmanager)


def _hand_over(job_id: str, code: Path | None, s: RuntimeSettings | None, progress: Callable[[str], None] | None,
               lifecycle_topic: str, registry_topic: str | None, catch_up_timeout: float, rollback: bool,
               nice: int, compilers_quiet_timeout_s: float = 0.0, hold_compilers_s: float = 0.0,
               shadow_s: float = 0.0, promote_at_tokens: bool = False, lower_jobmanager: bool = False) -> HandOver:
    s = s or RuntimeSettings()
    say = progress or (lambda m: None)
    if rollback and code is None:
        code = previous_code(job_id, s, lifecycle_topic)
    rec = upgrade.check(job_id, code, s)
    old = rec.settings
    if not isinstance(old, HandedOverJob):
        raise ControlError(f"job {job_id} is a {type(old).__name__} job: only the external state and the rendezvous "
                           "hand over with tokens; upgrade a model job with `rendezvous job upgrade` or a roll")
    kind = "rendezvous" if isinstance(old, RendezvousSettings) else "external-state"
    if "takes_over" not in json.loads(jobs_lib.job_parameters(job_id, s).get(SETTINGS, "{}")):
        raise ControlError(f"job {job_id} runs code from before transition tokens: it would not stop at a token. "
                           f"Upgrade it once with `rendezvous job upgrade {job_id}` (stop, then start from the "
                           "savepoint), and hand over without stopping from then on")
    root = jobs_lib.check_code(s, deploy.ENTRY_POINTS[type(old)], code)
    topics = [old.handed_over_topic]  # every version of the rendezvous reads every score: no tokens there
    registry = registry_topic or old.transitions_topic or TRANSITIONS
    owner, group = successor_names(old)
    hid = uuid.uuid4().hex[:12]
    base = {"name": old.job_name, "upgrade_id": hid, "kind": kind, "from_job_id": job_id, "owner": owner,
            "previous": old.owner_name, "from_code": rec.code, "to_code": jobs_lib.sources_digest(root),
            "code_dir": str(root), "rollback": rollback}
    took: dict[str, float] = {}
    held: jit.HeldCompilers | None = None
    completed = False

    def step(name: str, jid: str | None = None, **detail) -> None:
        deploy._record(s, LifecycleEvent(kind="upgrade", job_id=jid, at_ms=now_ms(),
                                         detail={**base, "step": name, **detail}), lifecycle_topic)

    def promote(pin: str) -> jit.HeldCompilers | None:
        """The new version's TaskManagers back to the normal priority but, if asked, for their optimizing compilers."""
        pinned.renice(s, pin, 0)
        return jit.HeldCompilers(pinned.pids(s, pin), RETIRING_NICE) if hold_compilers_s > 0 else None

    old_pin = pinned.of_job(s, job_id)
    if nice and old_pin:  # a hand-over to it interrupted while its compilers were held left them at the lowest priority
        pinned.renice(s, old_pin, 0)
    say(f"state check passed ({', '.join(sorted(rec.state or {})) or 'no state'}); {old.owner_name} -> {owner}")
    step("started", job_id)
    t0 = time.monotonic()
    asked_ms = now_ms()
    snap = savepoint(job_id, s)
    target = end_offsets(s, topics)
    took["snapshot_s"] = time.monotonic() - t0
    say(f"snapshot token: savepoint {snap} of the running {old.owner_name} ({took['snapshot_s']:.1f} s)")
    step("snapshot", job_id, savepoint=snap, input_end={f"{t}:{p}": o for (t, p), o in target.items()})
    fields: dict = {"owner": owner, "group_id": group, "takes_over": True}
    knows_shadows = rec.target_fields is None or "shadow_topic" in rec.target_fields  # code from before them does not
    # (`restore_bound` drops the running version's own shadow topic)
    shadow = shadow_topic(old.output_topic) if shadow_s > 0 and knows_shadows else None
    shadows_before = shadow_records = 0
    if isinstance(old, RendezvousSettings):
        fields.update(restored=True, taken_over_at_ms=now_ms())
    if shadow:
        try:
            kafka_io.ensure_topics(s.bootstrap_servers, [TopicSpec(shadow)],
                                   partitions=kafka_io.partition_count(s.bootstrap_servers, old.output_topic))
            if last_mode(s) == "secure":  # its job's principal may write it (topics named at run time too)
                grant(s, [Grant(principal(deploy.ROLES[type(old)]), "WRITE", "TOPIC", shadow)])
            shadows_before = sum(end_offsets(s, [shadow]).values())
        except Exception as e:  # noqa: BLE001 - the broker: said, and recorded
            step("failed", job_id, error=f"shadow topic {shadow}: {type(e).__name__}: {e}"[:2000])
            raise ControlError(f"could not create the shadow topic {shadow} ({type(e).__name__}: {e}); "
                               f"{old.owner_name} (job {job_id}) runs on, untouched: nothing was handed over. Hand "
                               "over without a shadow with --shadow 0") from e
        fields["shadow_topic"] = shadow
    new_settings = upgrade.restore_bound(old, rec.target_fields, asked_ms).model_copy(update=fields)
    t0 = time.monotonic()
    try:  # `flink run` and the TaskManagers start at this thread's priority (`hand_over`)
        new = deploy.submit_job(new_settings, s, snap, False, rec.execution_mode, parallelism=rec.parallelism,
                                code=root)
    except ControlError as e:  # not submitted (`flink run` failed; its TaskManagers were stopped)
        step("failed", job_id, error=str(e)[:2000])
        raise ControlError(f"the new version did not start ({e}); {old.owner_name} (job {job_id}) runs on, "
                           "untouched: nothing was handed over") from e
    try:  # until a token names it, whatever goes wrong (Ctrl-C too), the new version goes and the old one runs on
        jobs_lib.wait_running(new, s, timeout=catch_up_timeout)  # at the lowest priority, it may start slowly
        took["start_s"] = time.monotonic() - t0
        say(f"{owner} runs as job {new}, quiescent ({took['start_s']:.1f} s); catching up from the snapshot")
        step("quiescent", new)
        took["catch_up_s"] = wait_committed(new, s, group, target, catch_up_timeout, "catching up")
        took["keep_up_s"] = keep_up(new, s, group, old.input_topics, catch_up_timeout, "keeping up")
        if shadow:  # its output path runs (and is compiled) on the live requests, at the starting priority
            say(f"{owner} writes for live requests as a shadow into {shadow} for {shadow_s:g} s more")
            time.sleep(shadow_s)
            took["keep_up_s"] += keep_up(new, s, group, old.input_topics, catch_up_timeout, "keeping up")
            shadow_records = sum(end_offsets(s, [shadow]).values()) - shadows_before
        pin = pinned.of_job(s, new)
        quiet = ""
        if nice and pin and compilers_quiet_timeout_s > 0:
            took["compilers_s"], calm = jit.wait_quiet(pinned.pids(s, pin), compilers_quiet_timeout_s, progress=say)
            # what came in meanwhile: read before the tokens, as after the first catch-up
            took["keep_up_s"] += keep_up(new, s, group, old.input_topics, catch_up_timeout, "keeping up")
            quiet = (f"; its JIT compilers {'quiet' if calm else 'still busy'} after {took['compilers_s']:.1f} s "
                     f"at nice {nice}")
        if nice and pin and not promote_at_tokens:
            held = promote(pin)
        say(f"snapshot complete: {owner} has caught up ({took['catch_up_s']:.1f} s) and keeps up with "
            f"{', '.join(old.input_topics)} ({took['keep_up_s']:.1f} s){quiet}" + (
                f"; {shadow_records} shadow records in {shadow}" if shadow else "") + (
                f"; its TaskManagers back to the normal CPU priority from {nice}"
                + (" once its tokens are written" if promote_at_tokens else "") if nice and pin else "") + (
                f", but for their optimizing JIT compilers, held at nice {RETIRING_NICE}" if held else ""))
        step("snapshot_complete", new, **({"shadow_topic": shadow, "shadow_records": shadow_records} if shadow else {}))
    except BaseException as e:
        abandon(new, s)  # first: its TaskManagers, held compilers and all, stop with it
        if held:
            held.release()
        try:
            step("failed", new, error=f"{type(e).__name__}: {e}"[:2000])
        except Exception:  # noqa: BLE001 - the broker may be what failed; the error below says what happened
            pass
        if not isinstance(e, Exception):
            raise
        raise ControlError(f"{e}\nThe new version was cancelled; {old.owner_name} (job {job_id}) runs on, "
                           "untouched: nothing was handed over") from e
    try:
        try:
            tokens = write_tokens(s, topics, hid, owner, old.owner_name, registry)
        finally:  # the new version owns what follows its tokens (any that were written): at the normal priority
            if nice and pin and promote_at_tokens:
                held = promote(pin)
        if old_pin and promote_at_tokens:  # what it has left is what came before its tokens
            pinned.renice(s, old_pin, RETIRING_NICE)
        landed = {f"{t}:{p.partition}": p.offset for t, ps in tokens.items() for p in ps}
        say("transition tokens written: " + ", ".join(f"{k} at offset {o}" for k, o in landed.items()))
        step("transition", new, tokens=landed)
        t0 = time.monotonic()
        try:
            past = {(t, p.partition): p.offset + 1 for t, ps in tokens.items() for p in ps}
            wait_committed(job_id, s, old.group_id, past, catch_up_timeout, f"{old.owner_name} passing its tokens")
        except ControlError as e:
            step("failed", new, error=str(e)[:2000])
            raise ControlError(f"{e}\n{owner} (job {new}) owns every record after the tokens and runs on; "
                               f"{old.owner_name} (job {job_id}) has not passed them all yet. Once it has "
                               "(`rendezvous job list`, its consumer group's offsets), stop it: "
                               f"`rendezvous job stop {job_id}`") from e
        took["old_passed_s"] = time.monotonic() - t0
        if isinstance(old, RendezvousSettings):
            drain_ms = longest_deadline_ms(s, old) + 1_000
            say(f"{old.owner_name} passed the tokens; its last mailboxes close within {drain_ms} ms")
            time.sleep(drain_ms / 1000)
            took["drain_s"] = drain_ms / 1000
        if old_pin and not promote_at_tokens:
            pinned.renice(s, old_pin, RETIRING_NICE)
        t0 = time.monotonic()
        with jobmanager_lowered(s, RETIRING_NICE if lower_jobmanager else 0) as jm_lowered:
            old_sp = jobs_lib.stop_with_savepoint(job_id, s, retire=True)
        took["old_stop_s"] = time.monotonic() - t0
        say(f"{old.owner_name} (job {job_id}) stopped with savepoint {old_sp} ({took['old_stop_s']:.1f} s"
            + (f", the JobManager at nice {RETIRING_NICE} meanwhile" if jm_lowered else "")
            + f"); {owner} (job {new}) answers alone")
        step("completed", new, old_savepoint=old_sp, timings_s={k: round(v, 3) for k, v in took.items()})
        completed = True
    except BaseException as e:
        if not completed and not isinstance(e, ControlError):  # interrupted (Ctrl-C, SIGTERM) after the tokens
            try:
                step("failed", new, error=f"interrupted after the tokens: {type(e).__name__}: {e}"[:2000])
            except Exception:  # noqa: BLE001 - the broker may be what failed
                pass
            say(f"interrupted after the tokens: {owner} (job {new}) owns every record after them and runs on. If "
                f"{old.owner_name} (job {job_id}) still runs (`rendezvous job list`), stop it once its consumer "
                f"group is past the tokens: `rendezvous job stop {job_id}`")
        raise
    finally:
        if held and not completed:  # failed, or interrupted, before the end
            held.release()
    if held:  # what is left to compile, with the CPU the old version no longer uses
        try:
            took["compilers_held_s"], calm = jit.wait_quiet(pinned.pids(s, pin), hold_compilers_s, progress=say)
            say(f"{owner}'s JIT compilers {'quiet' if calm else 'still busy'} {took['compilers_held_s']:.1f} s after; "
                "its optimizing ones back to the normal CPU priority")
        except BaseException:  # noqa: BLE001 - Ctrl-C, a SIGTERM, the broker: the hand-over is complete all the same
            pass
        finally:
            held.release()
    return HandOver(kind, hid, job_id, new, owner, old.owner_name, snap, tokens, old_sp, took,
                    shadow_records if shadow else None, jm_lowered)
