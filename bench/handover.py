"""`make bench-handover`: what a user's clients see while `rendezvous upgrade` hands the rendezvous and the external
state over to a new version (control/ops/handover.py), compared with the minute before, on one deployment.

The synthetic model set (bench/__main__.py: constant runners, stages of 30 and 80 ms) is deployed on fresh topics with
--partitions partitions; a steady --rate requests/s is offered for the whole run (confluent-kafka, as `make bench`);
client latency is answer received - request sent, per request. The hand-over runs in a process of its own, as
`rendezvous upgrade` would. After --warm-up s and --before s, each job in --jobs is handed over to the same code (the
protocol's cost, not a new version's), --rounds times in turn, with --before s of load between hand-overs and --after
s at the end. For each hand-over: the --before s before it started (its baseline), the whole hand-over (new version
started quiescent -> old version stopped) and its transition (tokens written -> old version stopped, +-1 s): answers,
p50/p99/max, defaults; per job, the medians over the rounds of p99 against the baseline's; over the whole run:
unanswered, duplicate and conflicting answers. --timeline also prints, for each hand-over, its steps, the p99 of each
second of its transition over its baseline's, and the seconds whose p99 is over twice its baseline's: where the slowest
answer's time went (to the rendezvous, in it, back to the client; and each leg's p99 in the baseline, the hand-over and
the transition), the processes that used the most CPU in that second (sampled each second with psutil, by role:
JobManager, TaskManagers, `flink run`, Kafka, Python workers, the hand-over itself) and, in the thread-mode jobs' own
TaskManagers, the kinds of thread that did.

Writes run/bench/handover.json and prints the README's table (`python -m bench.handover --table` prints it again).
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import re
import statistics
import threading
import time
import uuid
from pathlib import Path

from bench.__main__ import SYNTHETIC, SYNTHETIC_SCHEDULE
from control import kafka_io, runtime
from control.ops import deploy, handover, jobs, schedules
from control.settings import RuntimeSettings
from schemas.records import LifecycleEvent
from schemas.topics import TopicNames
from tools.load import AnswerCollector, percentile
from training.synthetic import TransactionGenerator


def role(cmdline: list[str]) -> str:
    """What a process of the machine is, for the CPU profile: the JobManager, a TaskManager (shared, or a pinned
    one by its resource id), `flink run`, Kafka, a Python worker, a TaskManager's start script, or its name."""
    line = " ".join(cmdline)
    if "StandaloneSessionClusterEntrypoint" in line:
        return "jobmanager"
    if "TaskManagerRunner" in line:
        rid = next((a.split("=", 1)[1] for a in line.split() if a.startswith("taskmanager.resource-id=")), "")
        return f"taskmanager {rid}" if rid else "taskmanager (shared)"
    for needle, name in (("CliFrontend", "flink run"), ("BashJavaUtils", "taskmanager start script"),
                         ("kafka.Kafka", "kafka"), ("beam_boot", "python worker"), ("jobs.models.main", "python worker"),
                         ("bench.handover", "bench (clients)"), ("multiprocessing", "hand-over (control plane)")):
        if needle in line:
            return name
    return cmdline[0].rsplit("/", 1)[-1] if cmdline else "?"


def thread_name(pid: int, tid: int) -> str | None:
    """A thread's name (/proc's comm; what a JVM names its threads, cut to 15 characters), None once it has ended."""
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return None


def thread_kind(name: str) -> str:
    """A JVM thread's name without its number ("C2 CompilerThre", "GC Thread", "Kafka Fetcher for Source: ...")."""
    return re.sub(r"[#\-\s]*\d+$", "", name).strip() or name


class CpuProfile(threading.Thread):
    """Every second, the CPU each role of process used (psutil), with its nice: what competes with the version
    serving during a hand-over; and within the thread-mode jobs' own TaskManagers, by kind of thread (the JIT
    compilers, the garbage collector, the task's thread running the Python, Kafka's)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.threads: list[tuple[float, dict[str, float]]] = []
        self.fine: list[tuple[float, dict[str, float]]] = []
        self.roles: dict[int, str] = {}  # pid -> "role (nice n)" of the processes that used CPU in the last second
        self.halt = threading.Event()
        self._fine = threading.Thread(target=self._sample_fine, daemon=True)

    def run(self) -> None:
        import psutil

        last: dict[int, float] = {}
        last_thread: dict[tuple[int, int], float] = {}
        self._fine.start()
        while not self.halt.wait(1.0):
            use: dict[str, float] = {}
            inside: dict[str, float] = {}
            roles: dict[int, str] = {}
            for p in psutil.process_iter(["pid", "cmdline", "nice", "cpu_times"]):
                try:
                    ct = p.info["cpu_times"]
                    total = ct.user + ct.system
                    prev = last.get(p.info["pid"])
                    last[p.info["pid"]] = total
                    if prev is None or total - prev < 0.02:
                        continue
                    name = role(p.info["cmdline"] or [])
                    key = f"{name} (nice {p.info['nice']})"
                    use[key] = use.get(key, 0.0) + total - prev
                    roles[p.info["pid"]] = key
                    if name.startswith("taskmanager pinned-"):
                        for th in p.threads():
                            was = last_thread.get((p.pid, th.id))
                            last_thread[(p.pid, th.id)] = th.user_time + th.system_time
                            if was is not None and th.user_time + th.system_time - was >= 0.02:
                                comm = thread_name(p.pid, th.id) or "(ended)"  # ended since psutil listed it
                                kind = f"{name.split()[-1]}: {thread_kind(comm)}"
                                inside[kind] = inside.get(kind, 0.0) + th.user_time + th.system_time - was
                except (psutil.Error, TypeError, OSError):
                    continue
            now = time.time() * 1000
            self.samples.append((now, use))
            self.threads.append((now, inside))
            self.roles = roles

    FINE_S = 0.1

    def _sample_fine(self) -> None:
        """Every FINE_S, the CPU of the processes that used some in the last second, by role: what a one-second
        sample averages away (a JobManager's burst as a job ends, a stop-the-world pause). Labelled as the last
        one-second sample saw them: a process reniced since shows its old nice value for up to a second."""
        import psutil

        procs: dict[int, psutil.Process] = {}
        last: dict[int, float] = {}

        def cpu(pid: int) -> float | None:
            try:
                ct = (procs.get(pid) or procs.setdefault(pid, psutil.Process(pid))).cpu_times()
                return ct.user + ct.system
            except psutil.Error:
                return None

        while not self.halt.wait(self.FINE_S):
            roles = dict(self.roles)
            for pid in [p for p in procs if p not in roles]:
                procs.pop(pid)
            self.fine.append((time.time() * 1000, fine_tick(roles, last, cpu)))

    def fine_between(self, a: float, b: float, zero: float) -> list[list]:
        """[s after zero, {role: CPU s}] of the FINE_S samples between a and b."""
        return [[round((t - zero) / 1000, 2), {k: round(v, 3) for k, v in sorted(use.items(), key=lambda kv: -kv[1])}]
                for t, use in self.fine if a <= t <= b]

    def between(self, a: float, b: float, zero: float, threads: bool = False) -> list[list]:
        """[seconds after zero, {role (or pinned TaskManager: thread kind): CPU seconds}] of the samples between a
        and b."""
        return [[round((t - zero) / 1000), {k: round(v, 2) for k, v in sorted(use.items(), key=lambda kv: -kv[1])}]
                for t, use in (self.threads if threads else self.samples) if a <= t <= b]


def fine_tick(roles: dict[int, str], last: dict[int, float], cpu) -> dict[str, float]:
    """CPU seconds by role since the last tick of each process in `roles` (pid -> role), `cpu(pid)` its CPU so far
    (None: gone). `last` holds each process's CPU at the last tick; a process out of `roles` is forgotten, so when it
    is back its first tick counts from then, not from before."""
    for pid in [p for p in last if p not in roles]:
        del last[pid]
    use: dict[str, float] = {}
    for pid, key in roles.items():
        total = cpu(pid)
        if total is None:
            continue
        prev, last[pid] = last.get(pid), total
        if prev is not None and total > prev:
            use[key] = use.get(key, 0.0) + total - prev
    return use


class CheckpointLog(threading.Thread):
    """Every `every` s (and once more at `stop`), the checkpoints and savepoints of each job in `labels` (job id ->
    what it is), from the JobManager's REST API: when each was triggered and acknowledged by its last task, by (job,
    checkpoint id). Flink keeps only the last few per job (`web.checkpoints.history`), hence the polling; slow
    enough not to weigh on the JobManager (a few GETs)."""

    def __init__(self, s: RuntimeSettings, labels: dict[str, str], every: float = 30.0):
        super().__init__(daemon=True)
        self.s, self.labels, self.every = s, labels, every
        self.seen: dict[tuple[str, int], dict] = {}
        self.ended: set[str] = set()  # stopped jobs: polled once more, then no longer
        self.halt = threading.Event()

    def ended_job(self, jid: str) -> None:
        """A job that has stopped: its last checkpoints are read at the next poll, then it is left alone."""
        self.ended.add(jid)

    def poll(self) -> None:
        for jid, label in list(self.labels.items()):
            ended = jid in self.ended  # before the GET: a job that ends during it is read again next time
            try:
                history = jobs.flink_rest(self.s, f"/jobs/{jid}/checkpoints").get("history", [])
            except Exception:  # noqa: BLE001 - a job the JobManager no longer knows; the next poll tries again
                continue
            if ended:
                self.labels.pop(jid, None)
            for c in history:  # the latest word on each (in progress, then completed or failed)
                self.seen[jid, c["id"]] = {"job": label, "id": c["id"], "trigger_ms": c.get("trigger_timestamp"),
                                           "ack_ms": c.get("latest_ack_timestamp"), "status": c.get("status"),
                                           "savepoint": bool(c.get("is_savepoint"))}

    def run(self) -> None:
        while not self.halt.wait(self.every):
            self.poll()

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.poll()

    def between(self, a: float, b: float, zero: float) -> list[dict]:
        """The checkpoints triggered between a and b (ms), their times in s after zero, by trigger time."""
        def took(c: dict) -> int | None:  # only a completed one has its last acknowledgement
            return c["ack_ms"] - c["trigger_ms"] if c.get("status") == "COMPLETED" and (c.get("ack_ms") or 0) > 0 \
                else None

        out = [{**c, "trigger_s": round((c["trigger_ms"] - zero) / 1000, 2), "took_ms": took(c)}
               for c in self.seen.values() if c.get("trigger_ms") and a <= c["trigger_ms"] <= b]
        return sorted(({k: v for k, v in c.items() if k not in ("trigger_ms", "ack_ms")} for c in out),
                      key=lambda c: c["trigger_s"])


class Sender(threading.Thread):
    """`rate` requests/s on the requests topic until stopped; when each was sent (wall clock ms)."""

    def __init__(self, s: RuntimeSettings, topic: str, prefix: str, rate: float):
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.topic, self.rate = topic, rate
        self.gen = TransactionGenerator(seed=int(time.time()), prefix=prefix)
        self.p = Producer(kafka_io.librdkafka_config(s.bootstrap_servers, "client", **{"linger.ms": 1}))
        self.sent_ms: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        t0, i = time.monotonic(), 0
        while not self.halt.is_set():
            now = time.time() * 1000
            req = self.gen.next(int(now)).request
            self.p.produce(self.topic, json.dumps(req).encode(), key=req["entity_id"].encode())
            self.p.poll(0)
            self.sent_ms[req["request_id"]] = now
            i += 1
            self.halt.wait(max(0.0, t0 + i / self.rate - time.monotonic()))
        self.p.flush(30)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def window(sent_ms: dict, received_ms: dict, answers: dict, a: float, b: float) -> dict:
    ids = [r for r, t in sent_ms.items() if a <= t <= b]
    lat = [received_ms[r] - sent_ms[r] for r in ids if r in received_ms]
    split = [x for x in (legs(sent_ms[r], received_ms[r], answers.get(r, {})) for r in ids if r in received_ms) if x]
    return {"sent": len(ids), "answered": len(lat), "p50_ms": percentile(lat, 0.5), "p99_ms": percentile(lat, 0.99),
            "max_ms": round(max(lat), 1) if lat else None,
            "defaults": sum(1 for r in ids if answers.get(r, {}).get("is_default")),
            "legs_p99_ms": {k: percentile([x[k] for x in split], 0.99) for k in LEGS} if split else {}}


LEGS = ("to_rendezvous", "in_rendezvous", "to_client")


def legs(sent: float, received: float, answer: dict) -> dict:
    """Where one answer's time went (ms; one machine, one clock): to the rendezvous (the request through Kafka, the
    external state and the augmented topic: the answer's `received_at_ms`), in it (to `answered_at_ms`: scores, the
    schedule's deadlines, its own delays) and back to the client (the answers topic)."""
    at, done = answer.get("received_at_ms"), answer.get("answered_at_ms")
    if at is None or done is None:
        return {}
    return {"to_rendezvous": round(at - sent), "in_rendezvous": round(done - at), "to_client": round(received - done),
            "default": bool(answer.get("is_default"))}


SLOW_OVER = 1.5
"""`slow`: the transition's answers over this many times the baseline's p99, one by one."""


def slow(sent_ms: dict, received_ms: dict, answers: dict, a: float, b: float, zero: float, over_ms: float,
         most: int = 300) -> list[list]:
    """The requests sent between a and b answered in over `over_ms`: [ms after zero (sent), ms to the answer, ms to the
    rendezvous, in it, back, default], by send time (at most `most`): when a transition's slow answers were sent, to
    set against its steps and the jobs' checkpoints."""
    out = []
    for r, t in sent_ms.items():
        if a <= t <= b and r in received_ms and received_ms[r] - t > over_ms:
            leg = legs(t, received_ms[r], answers.get(r, {}))
            out.append([round(t - zero), round(received_ms[r] - t), leg.get("to_rendezvous"),
                        leg.get("in_rendezvous"), leg.get("to_client"), leg.get("default")])
    return sorted(out)[:most]


def timeline(sent_ms: dict, received_ms: dict, a: float, b: float, zero: float, answers: dict | None = None
             ) -> list[list]:
    """Per second of send time from `a` to `b`: [seconds after `zero`, answered, p99 ms, max ms, `legs` of the
    slowest answer] (where in a hand-over the latency goes up, to set against its steps, and in which leg)."""
    out = []
    for lo in range(int(a), int(b), 1000):
        ids = [r for r, t in sent_ms.items() if lo <= t < lo + 1000 and r in received_ms]
        lat = [received_ms[r] - sent_ms[r] for r in ids]
        slowest = max(ids, key=lambda r: received_ms[r] - sent_ms[r]) if ids else None
        out.append([round((lo - zero) / 1000), len(lat), percentile(lat, 0.99), round(max(lat)) if lat else None,
                    legs(sent_ms[slowest], received_ms[slowest], (answers or {}).get(slowest, {})) if slowest else {}])
    return out


def grouped(slow_answers: list[list], gap_ms: int = 200) -> list[list[list]]:
    """`slow` answers sent less than `gap_ms` apart, together."""
    out: list[list[list]] = []
    for row in slow_answers:
        if out and row[0] - out[-1][-1][0] < gap_ms:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def bursts(slow_answers: list[list], gap_ms: int = 200) -> list[str]:
    """`grouped` slow answers: "from..to: n, slowest ms (legs)"."""
    out = []
    for group in grouped(slow_answers, gap_ms):
        worst = max(group, key=lambda x: x[1])
        out.append(f"{group[0][0]:+d}..{group[-1][0]:+d}: {len(group)}, {worst[1]} ms ({worst[2]} / {worst[3]} / "
                   f"{worst[4]}{', default' if worst[5] else ''})")
    return out


def burst_spans(slow_answers: list[list], least: int = 3) -> list[tuple[int, int]]:
    """(first, last) send time of each burst of at least `least` slow answers (one alone is not a stall)."""
    return [(g[0][0], g[-1][0]) for g in grouped(slow_answers) if len(g) >= least]


def show_timeline(r: dict) -> str:
    """Each hand-over's steps, then its seconds whose p99 is over twice the baseline's."""
    lines = []
    for h in r["handovers"]:
        base = h["before"]["p99_ms"] or 0
        lines.append(f"{h['job']}: steps at " + ", ".join(f"{k} {v} s" for k, v in
                                                           sorted(h.get("steps_s", {}).items(), key=lambda kv: kv[1])))
        if h["before"].get("legs_p99_ms"):
            lines.append("  p99 of each leg, ms (to the rendezvous / in it / back to the client): "
                         + "; ".join(f"{label} " + " / ".join(str(h[w].get("legs_p99_ms", {}).get(k, "-"))
                                                               for k in LEGS)
                                     for label, w in (("baseline", "before"), ("whole hand-over", "during"),
                                                      ("transition", "transition"))))
        steps = h.get("steps_s", {})
        if base and "transition" in steps and "completed" in steps:
            lines.append("  p99 over the baseline's, each second from 1 s before its tokens to its old version's "
                         "stop: "
                         + " ".join(f"{math.floor(t - steps['transition']):+d} s {p / base:.1f}"
                                    for t, n, p, m, *_ in h.get("timeline", [])
                                    if p is not None and steps["transition"] - 1 <= t <= steps["completed"]))
        if h.get("checkpoints"):
            lines.append("  checkpoints from 3 s before its tokens to 2 s after its old version's stop (s after the "
                         "tokens: job, ms to its last acknowledgement): " + "; ".join(
                             f"{c['trigger_s']:+.2f} {c['job']}{' savepoint' if c['savepoint'] else ''} "
                             f"{c['took_ms'] if c['took_ms'] is not None else c['status']}" for c in h["checkpoints"]))
        if h.get("slow"):
            lines.append(f"  answers over {SLOW_OVER:g} times the baseline's p99 in its transition, sent close "
                         "together (ms after the tokens: how many, the slowest's ms to the rendezvous / in it / back): "
                         + "; ".join(bursts(h["slow"])))
        for first, last in burst_spans(h.get("slow", [])):
            fine = [(t, use) for t, use in h.get("cpu_fine", []) if first / 1000 - 0.5 <= t <= last / 1000 + 0.2]
            if fine:
                lines.append(f"    CPU s by {CpuProfile.FINE_S * 1000:.0f} ms, from 0.5 s before the answers sent at "
                             f"{first:+d}..{last:+d} ms (s after the tokens: all, the top three): " + "; ".join(
                                 f"{t:+.1f} {sum(use.values()):.2f}: " + ", ".join(
                                     f"{k} {v:.2f}" for k, v in list(use.items())[:3]) for t, use in fine))
        cpu = {t: use for t, use in h.get("cpu", [])}
        threads = {t: use for t, use in h.get("threads", [])}
        for t, n, p, m, *slowest in h.get("timeline", []):
            if p is not None and p > 2 * base:
                top = ", ".join(f"{k} {v:.2f}" for k, v in list(cpu.get(t, {}).items())[:4])
                leg = slowest[0] if slowest and slowest[0] else None
                lines.append(f"  {t:+4d} s: {n} answers, p99 {p} ms, max {m} ms" + (
                    f" (slowest: {leg['to_rendezvous']} ms to the rendezvous, {leg['in_rendezvous']} in it, "
                    f"{leg['to_client']} back{', default' if leg['default'] else ''})" if leg else "")
                    + (f"; CPU s: {top}" if top else ""))
                if threads.get(t):
                    lines.append("          in the jobs' own TaskManagers, by thread: " + ", ".join(
                        f"{k} {v:.2f}" for k, v in list(threads[t].items())[:4]))
    return "\n".join(lines)


def _hand_over(kind: str, job_id: str, lifecycle_topic: str, starting_nice: int, quiet_s: float, hold_s: float,
               shadow_s: float, jvm_args: str | None, promote: bool, lower_jm: bool, results) -> None:
    try:
        s = RuntimeSettings()
        if jvm_args is not None:  # the new version's TaskManagers' JVM options in this round (--also-jvm-args)
            s = s.model_copy(update={"pinned_taskmanager_jvm_args": jvm_args})
        ho = handover.hand_over(job_id, None, s, progress=lambda m: print(f"  [{kind}] {m}", flush=True),
                                lifecycle_topic=lifecycle_topic, starting_nice=starting_nice,
                                compilers_quiet_timeout_s=quiet_s, hold_compilers_s=hold_s, shadow_s=shadow_s,
                                promote_at_tokens=promote, lower_jobmanager=lower_jm)
        results.put({"job_id": ho.job_id, "upgrade_id": ho.upgrade_id, "timings_s": ho.timings_s,
                     "shadow_records": ho.shadow_records, "jobmanager_lowered": ho.jobmanager_lowered})
    except Exception as e:  # noqa: BLE001 - reported by the parent
        results.put({"error": f"{type(e).__name__}: {e}"})


def hand_over_apart(kind: str, job_id: str, lifecycle_topic: str, starting_nice: int, quiet_s: float,
                    hold_s: float, shadow_s: float = 0.0, jvm_args: str | None = None,
                    promote: bool = handover.PROMOTE_AT_TOKENS,
                    lower_jm: bool = handover.LOWER_JOBMANAGER) -> dict:
    """`handover.hand_over` in a process of its own, as a user runs `rendezvous upgrade`: the control plane's Python
    (kafka-python readers, JSON) must not hold this process's interpreter lock while the collector stamps when each
    answer arrived."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # not fork: this process runs librdkafka's threads
    results = ctx.Queue()
    proc = ctx.Process(target=_hand_over, args=(kind, job_id, lifecycle_topic, starting_nice, quiet_s, hold_s,
                                                       shadow_s, jvm_args, promote, lower_jm, results))
    proc.start()
    while True:
        try:
            got = results.get(timeout=5)
            break
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"the hand-over's process ended (exit {proc.exitcode}) without a result; see its "
                                   "output above") from None
    proc.join()
    if "error" in got:
        raise RuntimeError(f"hand-over of the {kind} failed: {got['error']}")
    return got


def run(a) -> dict:
    s = RuntimeSettings()
    runtime.up(s, progress=print)
    u = uuid.uuid4().hex[:8]
    t = TopicNames.suffixed(f"bench-ho-{u}")
    kafka_io.ensure_topics(s.bootstrap_servers, t.specs(), partitions=a.partitions)
    schedules.publish(s.bootstrap_servers, SYNTHETIC_SCHEDULE, topic=t.schedules, lifecycle_topic=None)
    common = {"start": "latest", "wait": False}
    ids = {"external-state": deploy.deploy_external_state(
        s, job_name=f"bench-ho: external-state {u}", source_topic=t.requests, sink_topic=t.augmented,
        quarantine_topic=t.quarantine, group_id=f"bench-ho-es-{u}", transitions_topic=t.transitions, **common)}
    models = [deploy.deploy_model(c, s, job_name=f"bench-ho: model {c.key} {u}", source_topic=t.augmented,
                                  sink_topic=t.scores, group_id=f"bench-ho-{c.model_id}-{u}",
                                  lifecycle_topic=t.lifecycle, **common) for c in SYNTHETIC]
    ids["rendezvous"] = deploy.deploy_rendezvous(
        s, job_name=f"bench-ho: rendezvous {u}", augmented_topic=t.augmented, scores_topic=t.scores,
        schedules_topic=t.schedules, answers_topic=t.answers, late_topic=t.late, invalid_topic=t.quarantine,
        group_id=f"bench-ho-rv-{u}", transitions_topic=t.transitions, **common)
    started = list(ids.values()) + models
    for jid in started:
        jobs.wait_running(jid, s, timeout=300)
    prefix = f"bench-ho-{u}"
    collector = AnswerCollector(s.bootstrap_servers, t.answers, prefix)
    collector.start()
    sender = Sender(s, t.requests, prefix, a.rate)
    sender.start()
    profile = CpuProfile()
    profile.start()
    labels = {jid: kind for kind, jid in ids.items()} | {jid: f"model {c.key}" for jid, c in zip(models, SYNTHETIC)}
    checkpoints = CheckpointLog(s, labels)
    checkpoints.start()
    from control.runtime import priority

    # what the hand-over really uses: it lowers no priority it could not give back (not root: 0)
    nice = a.starting_nice if priority.can_renice() else 0
    out: dict = {"rate": a.rate, "partitions": a.partitions, "before_s": a.before, "starting_nice": nice,
                 "pinned_jvm_args": s.pinned_taskmanager_jvm_args, "handovers": []}
    try:
        print(f"warming up {a.warm_up:.0f} s, then {a.before:.0f} s of baseline at {a.rate:.0f} requests/s")
        time.sleep(a.warm_up + a.before)
        order = [(r, k) for r in range(a.rounds) for k in a.jobs]
        for n, (rnd, kind) in enumerate(order, 1):
            t0 = time.time() * 1000
            rest = a.before if n < len(order) else a.after
            if kind == NONE:  # the same windows over the load alone: how much p99 moves with no hand-over
                print(f"round {n}/{len(order)}: no hand-over, {a.idle:.0f} s of load alone")
                time.sleep(a.idle)
                out["handovers"].append({"job": NONE, "started_ms": t0, "completed_ms": time.time() * 1000,
                                         "timings_s": {}})
                time.sleep(rest + AFTER_S)
                continue
            quiet_s = compilers_quiet_timeout(a.compilers_quiet, rnd)
            hold_s = by_round(a.hold_jit, rnd, handover.HOLD_COMPILERS_S)
            start_nice = starting_nice(a.starting_nice, a.also_starting_nice, rnd)
            shadow_s = by_round(a.shadow, rnd, handover.SHADOW_S)
            jvm_args = jvm_args_of(s.pinned_taskmanager_jvm_args, a.also_jvm_args, rnd)
            promote = by_round(a.promote_at_tokens, rnd, 1.0) > 0
            lower_jm = by_round(a.lower_jobmanager, rnd, 1.0) > 0
            print(f"hand-over {n}/{len(order)}: the {kind}, started at nice {start_nice}"
                  + (f" (waiting at most {quiet_s:.0f} s for its JIT compilers)" if quiet_s else " (no JIT wait)")
                  + (" (its optimizing compilers held)" if hold_s else " (compilers not held)")
                  + (f" (a shadow for {shadow_s:g} s)" if shadow_s else " (no shadow)")
                  + (f" (its TaskManagers' JVM options: {jvm_args or 'the defaults'})"
                     if a.also_jvm_args is not None else "")
                  + (" (priorities swapped at the tokens)" if promote else " (the new version promoted before its "
                     "tokens)")
                  + (" (the JobManager lowered as the old version stops)" if lower_jm else " (the JobManager as it "
                     "is)"))
            ho = hand_over_apart(kind, ids[kind], t.lifecycle, start_nice, quiet_s, hold_s, shadow_s, jvm_args,
                                 promote, lower_jm)
            labels[ids[kind]] += " (old)"
            checkpoints.ended_job(ids[kind])
            ids[kind] = ho["job_id"]
            labels[ho["job_id"]] = kind
            started.append(ho["job_id"])
            t1 = time.time() * 1000  # the windows end at its `completed` step (below), not at its return
            out["handovers"].append({"job": kind, "upgrade_id": ho["upgrade_id"], "started_ms": t0, "returned_ms": t1,
                                     "compilers_quiet_timeout_s": quiet_s,
                                     "starting_nice": start_nice if priority.can_renice() else 0,
                                     # what was done, not asked: nothing is held where the priority cannot be given back
                                     "hold_compilers_s": hold_s if "compilers_held_s" in ho["timings_s"] else 0.0,
                                     "shadow_s": shadow_s, "shadow_records": ho.get("shadow_records"),
                                     "jvm_args": jvm_args if a.also_jvm_args is not None else None,
                                     "promote_at_tokens": promote,
                                     # what was done: only where the priority can be given back
                                     "jobmanager_lowered": ho.get("jobmanager_lowered", False),
                                     "timings_s": {k: round(v, 2) for k, v in ho["timings_s"].items()}})
            # its window after (`AFTER_S` from its old version's stop) must not be in the next baseline
            rest += max(0.0, AFTER_S - ho["timings_s"].get("compilers_held_s", 0.0))
            print(f"{kind} handed over in {(t1 - t0) / 1000:.1f} s; {rest:.0f} s of load")
            time.sleep(rest)
    finally:
        profile.halt.set()
        sender.stop()
        time.sleep(a.drain)
        collector.stop()
        checkpoints.stop()
        for jid in started:
            try:
                if jobs.job_state(jid, s) == "RUNNING":
                    jobs.cancel(jid, s)
            except Exception:  # noqa: BLE001 - cleanup
                pass
    events = [LifecycleEvent.parse(v) for _, v in kafka_io.read_to_end(s.bootstrap_servers, t.lifecycle)]
    at = {(e.detail.get("upgrade_id"), e.detail.get("step")): e.at_ms for e in events if e.kind == "upgrade"}
    sent, rcv, ans = sender.sent_ms, collector.received_ms, collector.answers
    for h in out["handovers"]:
        uid = h.get("upgrade_id")
        if uid:  # when the old version had stopped (the hand-over may go on: its compilers held)
            h["completed_ms"] = at[uid, "completed"]
        tokens_ms = at[uid, "transition"] if uid else h["completed_ms"] - NONE_TRANSITION_S * 1000 + 1000
        h["before"] = window(sent, rcv, ans, h["started_ms"] - a.before * 1000, h["started_ms"])
        h["during"] = window(sent, rcv, ans, h["started_ms"], h["completed_ms"])
        h["transition"] = window(sent, rcv, ans, tokens_ms - 1000, h["completed_ms"] + 1000)
        h["after"] = window(sent, rcv, ans, h["completed_ms"], h["completed_ms"] + AFTER_S * 1000)
        h["steps_s"] = {step: round((ms - h["started_ms"]) / 1000, 1) for (u, step), ms in at.items() if u == uid}
        h["timeline"] = timeline(sent, rcv, h["started_ms"] - 5000, h["completed_ms"] + 5000, h["started_ms"], ans)
        h["cpu"] = profile.between(h["started_ms"] - 5000, h["completed_ms"] + 5000, h["started_ms"])
        # the threads until 30 s after the tokens at least (new_compilers), as far as the run sampled
        h["cpu_fine"] = profile.fine_between(tokens_ms - 1500, h["completed_ms"] + 1000, tokens_ms)
        h["checkpoints"] = checkpoints.between(tokens_ms - 3000, h["completed_ms"] + 2000, tokens_ms)
        h["slow"] = slow(sent, rcv, ans, tokens_ms - 1000, h["completed_ms"] + 1000, tokens_ms,
                         SLOW_OVER * (h["before"]["p99_ms"] or 0))
        h["threads"] = profile.between(h["started_ms"] - 5000, max(h["completed_ms"] + 5000, tokens_ms
                                                                   + JIT_AFTER_S * 1000), h["started_ms"], threads=True)
    out.update(sent=len(sent), answered=sum(1 for r in sent if r in rcv), duplicates=collector.duplicates,
               conflicting=collector.conflicting)
    return out


NONE = "none"
"""A --jobs entry handing nothing over: the same windows over the load alone (the machine's own noise)."""
NONE_TRANSITION_S = 13.0
"""The seconds at the end of a round without a hand-over taken as its 'transition' (with the 1 s after it, as a
hand-over's: 14 s; a hand-over's was 10-16 s in the runs of 2026-12-07)."""
AFTER_S = 20.0
"""The window after a hand-over (its old version stopped) compared with the baseline: what it left behind (its new
version's JIT compilers, held until then, among others)."""


def by_round(mode: str, round_index: int, on: float) -> float:
    """An option's value in this round: `on`, `off` (0), or `alternate` (off in the first round, on in the second,
    ...: both in one run, on the same machine and load)."""
    return {"on": on, "off": 0.0}.get(mode, on if round_index % 2 else 0.0)


def alternating(base, also, round_index: int):
    """A setting's value in this round: `base`, or with `also` (not None) alternating, `base` in the first round,
    `also` in the second, ..."""
    return also if also is not None and round_index % 2 else base


def starting_nice(base: int, also: int, round_index: int) -> int:
    """The priority the new version starts at in this round (`alternating`; `also` 0: always `base`)."""
    return alternating(base, also or None, round_index)


def jvm_args_of(base: str, also: str | None, round_index: int) -> str:
    """The JVM options of the new version's TaskManagers in this round: the runtime's (`base`), or `also`
    (`alternating`)."""
    return alternating(base, also, round_index)


def compilers_quiet_timeout(mode: str, round_index: int) -> float:
    """The hand-over's wait for its JIT compilers in this round (`by_round`; on: `COMPILERS_QUIET_WAIT_S`; off is
    what `rendezvous upgrade` does by default)."""
    return by_round(mode, round_index, handover.COMPILERS_QUIET_WAIT_S)


def variant(h: dict) -> str:
    """What was tried in this hand-over, for grouping the medians ('' in a run of one kind only)."""
    parts = []
    if h.get("compilers_quiet_timeout_s") is not None:
        wait = h["compilers_quiet_timeout_s"]
        parts.append(f"JIT wait up to {wait:.0f} s" if wait else "no JIT wait")
    if h.get("hold_compilers_s") is not None:
        parts.append("compilers held" if h["hold_compilers_s"] else "compilers not held")
    if h.get("starting_nice") is not None:
        parts.append(f"started at nice {h['starting_nice']}")
    if h.get("shadow_s") is not None:
        parts.append(f"a shadow for {h['shadow_s']:g} s" if h["shadow_s"] else "no shadow")
    if h.get("promote_at_tokens") is not None:
        parts.append("priorities swapped at the tokens" if h["promote_at_tokens"] else "new version promoted before")
    if h.get("jobmanager_lowered") is not None:
        parts.append("JobManager lowered as the old stops" if h["jobmanager_lowered"] else "JobManager as it is")
    if h.get("jvm_args") is not None:
        parts.append(f"JVM options {h['jvm_args'] or '(defaults)'}")
    return ", ".join(parts)


JIT_AFTER_S = 30.0
"""How long after a hand-over's tokens its new version's compiler CPU is added up (`new_compilers`)."""


def new_compilers(h: dict, after_s: float = JIT_AFTER_S) -> tuple[float, float, float] | None:
    """CPU seconds the new version's JIT compiler threads used before its tokens and in the `after_s` seconds after
    them, and how many of those seconds the samples cover (a run's last sample may come sooner), from the hand-over's
    per-thread samples; the new version's TaskManagers are those with no thread sampled before the hand-over started.
    None without samples, or without any from before it started (old and new could not be told apart)."""
    samples, steps = h.get("threads"), h.get("steps_s", {})
    if not samples or "transition" not in steps:
        return None
    old = {k.split(":")[0] for t, th in samples if t < 0 for k in th}
    if not old:
        return None
    tokens = steps["transition"]
    covered = min(after_s, max(0.0, max(t for t, _ in samples) - tokens))
    before = after = 0.0
    for t, th in samples:
        for k, v in th.items():
            if k.split(":")[0] in old or "CompilerThre" not in k:
                continue
            if t < tokens:
                before += v
            elif t <= tokens + covered:
                after += v
    return round(before, 1), round(after, 1), round(covered, 1)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def table(r: dict) -> str:
    """One row per hand-over (its baseline, the whole hand-over, its transition, the seconds after), then the medians
    per job (and per variant tried, when the run alternated: `variant`)."""
    n = len(r["handovers"])
    labels = {variant(h) for h in r["handovers"] if h["job"] != NONE}

    def what(h: dict) -> str:
        if h["job"] == NONE:
            return "none (load alone)"
        return h["job"] + (f" ({variant(h)})" if len(labels) > 1 else "")

    lines = [f"Offered {r['rate']:.0f} requests/s on {r['partitions']} partitions; {n} rounds, each after "
             f"{r['before_s']:.0f} s of load (its baseline); the new version started at nice "
             + " or ".join(str(x) for x in sorted({r.get("starting_nice", 0)} | {
                 h["starting_nice"] for h in r["handovers"] if h.get("starting_nice") is not None}))
             + (f", the thread-mode jobs' TaskManagers with JVM options "
                                               f"{r['pinned_jvm_args']}" if r.get("pinned_jvm_args") else "")
             + ("; the new versions' TaskManagers' JVM options alternating by round: " + " / ".join(
                 repr(x or "(defaults)") for x in dict.fromkeys(h["jvm_args"] for h in r["handovers"]
                                                                 if h.get("jvm_args") is not None))
                if any(h.get("jvm_args") is not None for h in r["handovers"]) else "")
             + f"; {r['sent']} sent, {r['answered']} answered, {r['duplicates']} duplicate "
             f"and {r['conflicting']} conflicting answers.", "",
             f"| hand-over | answers (baseline / whole / transition) | p99 ms: {r['before_s']:.0f} s before | whole "
             f"hand-over | transition | {AFTER_S:.0f} s after | transition / before | whole / before | after / before "
             "| defaults (baseline / whole / transition) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for h in r["handovers"]:
        b, d, t, af = h["before"], h["during"], h["transition"], h.get("after", {})
        lines.append(f"| {what(h)} | {b['answered']}/{b['sent']} / {d['answered']}/{d['sent']} / "
                     f"{t['answered']}/{t['sent']} | {b['p99_ms']} | {d['p99_ms']} | {t['p99_ms']} | "
                     f"{af.get('p99_ms', '-')} | {_ratio(t['p99_ms'], b['p99_ms'])} | "
                     f"{_ratio(d['p99_ms'], b['p99_ms'])} | {_ratio(af.get('p99_ms'), b['p99_ms']) or '-'} | "
                     f"{b['defaults']} / {d['defaults']} / {t['defaults']} |")
    lines.append("")
    for label in dict.fromkeys(what(h) for h in r["handovers"]):
        hs = [h for h in r["handovers"] if what(h) == label]
        tr = [x for x in (_ratio(h["transition"]["p99_ms"], h["before"]["p99_ms"]) for h in hs) if x is not None]
        wh = [x for x in (_ratio(h["during"]["p99_ms"], h["before"]["p99_ms"]) for h in hs) if x is not None]
        af = [x for x in (_ratio(h.get("after", {}).get("p99_ms"), h["before"]["p99_ms"]) for h in hs)
              if x is not None]
        lines.append(f"- {label}, median of {len(hs)}: transition p99 / baseline p99 {statistics.median(tr):.2f}, "
                     f"whole hand-over p99 / baseline p99 {statistics.median(wh):.2f}"
                     + (f", {AFTER_S:.0f} s after / baseline {statistics.median(af):.2f}" if af else "")
                     if tr and wh else f"- {label}: -")
    lines.append("")
    # the compilers after the tokens over the same span for every hand-over of the run: the shortest sampled
    spans = [x[2] for x in (new_compilers(h) for h in r["handovers"]) if x]
    span = min(spans) if spans else 0.0
    for h in r["handovers"]:
        if h["job"] == NONE:
            continue
        jit = new_compilers(h, span) if spans else None
        lines.append(f"- {h['job']}: " + ", ".join(f"{k} {v} s" for k, v in h["timings_s"].items()) + (
            f"; {shadow} shadow records before its tokens"
            if (shadow := h.get("shadow_records", h.get("shadow_answers"))) is not None else "") + (
            f"; the new version's JIT compilers: {jit[0]} CPU s before its tokens, {jit[1]} in the {span:.0f} s "
            "after" if jit else ""))
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100.0, help="offered requests/s")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--warm-up", type=float, default=60.0,
                   help="seconds of load before the first baseline (fresh JVMs and workers answer late at first)")
    p.add_argument("--before", type=float, default=60.0, help="seconds of load before each hand-over (the baseline)")
    p.add_argument("--after", type=float, default=AFTER_S + 5, help="seconds of load after the last round")
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for the last answers")
    p.add_argument("--jobs", nargs="+", default=["rendezvous", "external-state"],
                   choices=["rendezvous", "external-state", NONE],
                   help=f"what to hand over in each round, in turn ({NONE}: nothing, the same windows over the load "
                        "alone: the machine's own noise)")
    p.add_argument("--idle", type=float, default=90.0,
                   help=f"how long a round of {NONE} lasts (its 'whole hand-over'; its last {NONE_TRANSITION_S:.0f} s: "
                        "its 'transition')")
    p.add_argument("--also-starting-nice", type=int, default=0,
                   help="alternate by round: the new version starts at --starting-nice in the first round, at this "
                        "priority in the second, ... (an even --rounds); 0: always at --starting-nice")
    p.add_argument("--hold-jit", choices=["on", "off", "alternate"], default="on",
                   help="the new version's optimizing JIT compilers held at the lowest priority through the transition "
                        f"(on: as by default, at most {handover.HOLD_COMPILERS_S:.0f} s after), or not (off), or "
                        "alternate by round (off first; an even --rounds)")
    p.add_argument("--shadow", choices=["on", "off", "alternate"], default="on",
                   help="a new version writes as a shadow before its tokens (on: as by default, "
                        f"{handover.SHADOW_S:.0f} s more once it keeps up), or not (off), or alternate by round (off "
                        "first; an even --rounds)")
    p.add_argument("--promote-at-tokens", choices=["on", "off", "alternate"],
                   default="on" if handover.PROMOTE_AT_TOKENS else "off",
                   help="the new version gets the normal priority back and the old one the lowest as soon as the "
                        "tokens are written (on), or the new one before them and the old one once it serves nothing "
                        "(off), or alternate by round (off first; an even --rounds); default: as `rendezvous "
                        "upgrade`")
    p.add_argument("--lower-jobmanager", choices=["on", "off", "alternate"],
                   default="on" if handover.LOWER_JOBMANAGER else "off",
                   help="the JobManager works at the lowest priority while the old version stops (on), or at its own "
                        "(off), or alternate by round (off first; an even --rounds); default: as `rendezvous upgrade`")
    p.add_argument("--also-jvm-args", default=None, metavar="ARGS",
                   help="alternate by round: the new version's TaskManagers get the runtime's JVM options "
                        "(RENDEZVOUS_PINNED_TASKMANAGER_JVM_ARGS) in the first round, these in the second, ... (an "
                        "even --rounds; '' for the JVM's defaults; options starting with '-' as "
                        "--also-jvm-args=-XX:...)")
    p.add_argument("--rounds", type=int, default=3,
                   help="hand each job over this many times (medians over the rounds; the machine is noisy)")
    p.add_argument("--starting-nice", type=int, default=handover.STARTING_NICE,
                   help="CPU priority the new version starts at (0: the same as the version serving)")
    p.add_argument("--compilers-quiet", choices=["on", "off", "alternate"], default="off",
                   help="the hand-over waits for the new version's JIT compilers before its priority goes back (on: "
                        f"at most {handover.COMPILERS_QUIET_WAIT_S:.0f} s), or not (off, as by default), or alternate "
                        "by round (off first; an even --rounds: as many of each): both in one run")
    p.add_argument("--out", type=Path, default=None, help="[default: run/bench/handover.json]")
    p.add_argument("--table", action="store_true", help="print the table of the last run's JSON and exit")
    p.add_argument("--timeline", action="store_true",
                   help="also print each hand-over's steps and the seconds whose p99 is over twice the baseline's")
    a = p.parse_args(argv)
    for opt, mode in (("--compilers-quiet", a.compilers_quiet), ("--hold-jit", a.hold_jit), ("--shadow", a.shadow),
                      ("--also-starting-nice", "alternate" if a.also_starting_nice else ""),
                      ("--also-jvm-args", "alternate" if a.also_jvm_args is not None else ""),
                      ("--promote-at-tokens", a.promote_at_tokens), ("--lower-jobmanager", a.lower_jobmanager)):
        if mode == "alternate" and a.rounds % 2:
            p.error(f"{opt} alternate needs an even --rounds (as many with as without), not {a.rounds}")
    if a.also_starting_nice and a.also_starting_nice == a.starting_nice:
        p.error(f"--also-starting-nice {a.also_starting_nice} is --starting-nice already: nothing would alternate")
    runtime_jvm_args = RuntimeSettings().pinned_taskmanager_jvm_args
    if a.also_jvm_args is not None and a.also_jvm_args.split() == runtime_jvm_args.split():
        p.error(f"--also-jvm-args {a.also_jvm_args!r} are the runtime's JVM options already: nothing would "
                "alternate")
    if a.after < AFTER_S:
        p.error(f"--after must cover the {AFTER_S:.0f} s after the last hand-over, not {a.after}")
    path = a.out or RuntimeSettings().run_dir / "bench" / "handover.json"
    if not a.table:
        r = run(a)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(r, indent=1))
        print(f"wrote {path}")
    r = json.loads(path.read_text())
    print(table(r))
    if a.timeline:
        print(show_timeline(r))


if __name__ == "__main__":
    main()
