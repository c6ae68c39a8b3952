"""Soft roll and rollback: move traffic from one model deployment to another in weighted steps, one
schedule version per step, watched by guards over live scores; roll back automatically when a guard
is crossed, or by hand in one step.

A step's schedule is the schedule the roll started from, with the new model beside the one it
replaces: where the replaced model is a stage's first choice, the stage splits its first choice
between the two by weight (a hash of the request id picks the arm, so a request always gets the same
one, and the new model's requests at 10 % are among its requests at 50 %); elsewhere the new model is
added right after it. The other arm stays in the stage as the fallback. At 100 % the new model takes
the replaced one's place and the replaced one follows it; when the roll completes, the replaced model
moves to postproduction (it stays running as the fallback).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from control.errors import RollError
from control.ops import registry, schedules
from control.ops.live import ScoreWindow, disagreement, stats_of
from control.ops.registry import Plane
from schemas.records import MODEL_KEY_SEP, LifecycleEvent, RollInfo, Schedule, now_ms


# ------------------------------------------------------------------------------------------------ guards
@dataclass(frozen=True)
class Guards:
    """When a roll stops and rolls back, judged over the last `window_s` seconds of live scores."""

    window_s: float = 10.0
    min_scores: int = 20
    """Scores of the new model needed in the window before its rates are judged."""
    max_error_rate: float = 0.05
    """Error scores (failures and timeouts) of the new model, as a share of its scores."""
    max_p99_ms: float | None = None
    """The new model's latency p99; None: the deadline of the first stage that names the replaced model."""
    max_p99_ratio: float = 1.5
    """When the replaced model's p99 in the same window is over `max_p99_ms` too (a busy machine slows
    both), the new model crosses the latency guard only past this many times the replaced model's p99;
    0: the bound alone."""
    evidence_wait_s: float = 30.0
    """How long a step waits past its time for `min_scores` of the new model in the window; with none by
    then, the roll rolls back: a step never passes on no evidence."""
    min_volume: float = 0.5
    """The new model's scores in the window, relative to the replaced model's (a job that stopped scoring)."""
    canary: str | None = None
    """`id@version` of the canary; None: no canary guard."""
    max_canary_disagreement_increase: float = 0.10
    """How much more often than the replaced model the new one may disagree with the canary."""
    output_field: str = "fraud_probability"
    threshold: float = 0.5
    """Two scores agree when both are on the same side of `threshold` (for the canary guard)."""


def check_guards(guards: Guards, samples, new: str, old: str, since_ms: int | None = None) -> list[str]:
    """The guards the new model crosses in `samples` (live.ScoreSample) since `since_ms`; [] when none."""
    st = stats_of(samples, since_ms)
    n, o = st.get(new), st.get(old)
    breaches = []
    if o is not None and o.scores >= guards.min_scores and (n is None or n.scores < guards.min_volume * o.scores):
        breaches.append(f"{new} scored {0 if n is None else n.scores} requests in the window, {old} "
                        f"{o.scores} (< {guards.min_volume:.0%}): is its job running?")
    if n is None or n.scores < guards.min_scores:
        return breaches
    if n.error_rate > guards.max_error_rate:
        breaches.append(f"{new} error rate {n.error_rate:.1%} > {guards.max_error_rate:.1%} "
                        f"({n.errors} of {n.scores} scores)")
    if guards.max_p99_ms is not None and n.p99_ms is not None and n.p99_ms > guards.max_p99_ms:
        o_p99 = o.p99_ms if o is not None and o.scores >= guards.min_scores else None
        if o_p99 is None or o_p99 <= guards.max_p99_ms or not guards.max_p99_ratio:
            breaches.append(f"{new} latency p99 {n.p99_ms:.0f} ms > {guards.max_p99_ms:.0f} ms"
                            + ("" if o_p99 is None else f" ({old}: {o_p99:.0f} ms)"))
        elif n.p99_ms > guards.max_p99_ratio * o_p99:
            breaches.append(f"{new} latency p99 {n.p99_ms:.0f} ms > {guards.max_p99_ms:.0f} ms, and > "
                            f"{guards.max_p99_ratio:g} x {old}'s {o_p99:.0f} ms")
    if guards.canary:
        both, d_new = disagreement(samples, new, guards.canary, guards.threshold, since_ms)
        _, d_old = disagreement(samples, old, guards.canary, guards.threshold, since_ms)
        if both >= guards.min_scores and d_new > d_old + guards.max_canary_disagreement_increase:
            breaches.append(f"{new} disagrees with the canary {guards.canary} on {d_new:.1%} of requests, "
                            f"{old} on {d_old:.1%} (allowed: +{guards.max_canary_disagreement_increase:.0%})")
    return breaches


# ------------------------------------------------------------------------------------------------ schedules
def replaced_model(base: Schedule) -> str:
    """What a roll replaces by default: the first stage's first choice."""
    return base.stages[0].models[0]


def split_schedule(base: Schedule, new: str, old: str, weight: int) -> dict:
    """The body of `base` with `weight` % of `old`'s traffic given to `new` (see the module's doc)."""
    if not 0 <= weight <= 100:
        raise RollError(f"a weight is a percentage, not {weight}")
    if not any(old in st.models for st in base.stages):
        raise RollError(f"{old} is not in the active schedule v{base.version} ({base.model_ids()}): nothing to "
                        f"roll from; name the model to replace with --replace")
    body = schedules.body(base)
    stages = []
    for st in base.stages:
        d = st.model_dump()
        models = list(st.models)
        if old in models and weight > 0 and not (new in models and models.index(new) < models.index(old)):
            # (a stage that already prefers the new model to the old one stays as it is)
            if new in models:
                models.remove(new)
            i = models.index(old)
            if st.split:
                raise RollError(f"stage with deadline {st.deadline_ms} ms already splits traffic ({st.split}): "
                                "roll from a schedule without splits (finish or roll back the other roll first)")
            if weight == 100:
                models[i:i + 1] = [new, old]
            else:
                models.insert(i + 1, new)
                if i == 0:
                    d["split"] = {new: weight, old: 100 - weight}
        d["models"] = models
        stages.append(d)
    body["stages"] = stages
    return body


# ------------------------------------------------------------------------------------------------ the roll
@dataclass
class RollResult:
    model: str
    replaces: str
    base_version: int
    steps_done: list[int] = field(default_factory=list)
    schedule_versions: list[int] = field(default_factory=list)
    rolled_back: bool = False
    breaches: list[str] = field(default_factory=list)
    rollback_version: int | None = None

    @property
    def completed(self) -> bool:
        return not self.rolled_back and bool(self.steps_done) and self.steps_done[-1] == 100


def scores_of(window: ScoreWindow, key: str) -> int:
    st = window.stats().get(key)
    return 0 if st is None else st.scores


def _event(plane: Plane, kind: str, result: RollResult, **detail) -> None:
    mid, _, version = result.model.partition("@")
    plane.record(LifecycleEvent(kind=kind, model_id=mid, model_version=version or None, at_ms=now_ms(),
                                detail={"replaces": result.replaces, "base_version": result.base_version, **detail}))


def roll(plane: Plane, new: str, steps: list[int] = (10, 50, 100), every_s: float = 60.0,
         guards: Guards | None = None, replace: str | None = None, check_every_s: float = 1.0,
         progress: Callable[[str], None] | None = print) -> RollResult:
    """Roll `new` (`id@version`, running in preproduction or production) into the active schedule in
    `steps` (percent of the replaced model's traffic), one step every `every_s` seconds, watching the
    guards; when a guard is crossed, roll back to the schedule the roll started from."""
    say = progress or (lambda m: None)
    steps = list(steps)
    if not steps or any(b <= a for a, b in zip(steps, steps[1:])) or steps[0] <= 0 or steps[-1] != 100:
        raise RollError(f"steps are increasing percentages ending at 100 (e.g. 10,50,100), not {steps}")
    known = registry.entries(plane)
    entry = registry.get(plane, new, known)
    if entry.canary:
        raise RollError(f"{new} is the canary: a reference model is never rolled into production")
    if entry.stage not in ("preproduction", "production"):
        raise RollError(f"{new} is in {entry.stage}: move it to preproduction first (`rendezvous model stage {new} "
                        "preproduction`) so it scores live traffic before it takes any")
    if not registry.job_alive(plane, entry):
        raise RollError(f"the model job of {new} is not running ({entry.job_id}); move it to preproduction again "
                        "to deploy it")
    base = schedules.active(plane.bootstrap, plane.topics.schedules)
    if base is None:
        raise RollError("no schedule is published yet: publish one first (`rendezvous schedule set FILE`)")
    if base.roll is not None and base.roll.weight < 100:
        raise RollError(f"the active schedule v{base.version} is step {base.roll.weight} % of a roll of "
                        f"{base.roll.model} that did not finish: `rendezvous rollback` first")
    old = replace or replaced_model(base)
    if MODEL_KEY_SEP not in old or MODEL_KEY_SEP not in new:
        raise RollError(f"a roll moves traffic between deployments named id@version, not {old!r} -> {new!r}; "
                        "publish the schedule again with `rendezvous schedule set` (bare ids become the version "
                        "in production), or name the model to replace with --replace ID@VERSION")
    if old == new:
        raise RollError(f"{new} already is the first choice of the active schedule v{base.version}")
    split_schedule(base, new, old, steps[0])  # refuses what cannot be rolled before anything changes
    g = guards or Guards()
    if g.max_p99_ms is None:
        first = next(st for st in base.stages if old in st.models)
        g = Guards(**{**asdict(g), "max_p99_ms": float(first.deadline_ms)})
    result = RollResult(model=new, replaces=old, base_version=base.version)
    _event(plane, "roll_started", result, steps=steps, every_s=every_s, guards=asdict(g))
    say(f"rolling {new} in, replacing {old}, from schedule v{base.version}: steps {steps} every {every_s:g} s")
    if entry.stage == "preproduction":
        registry.set_stage(plane, new, "production", reason=f"roll replacing {old}")
    window = ScoreWindow(plane.bootstrap, plane.topics.scores, g.window_s, g.output_field)
    try:
        return _steps(plane, result, base, new, old, steps, every_s, g, window, check_every_s, say)
    except BaseException as e:  # interrupted (Ctrl-C) or failed mid-roll: never leave a half-rolled schedule
        if result.schedule_versions and not result.rolled_back:
            say(f"  roll stopped ({type(e).__name__}: {e}); rolling back")
            rollback(plane, reason=f"roll stopped: {type(e).__name__}", progress=say)
        raise
    finally:
        window.close()


def _steps(plane: Plane, result: RollResult, base: Schedule, new: str, old: str, steps: list[int], every_s: float,
           g: Guards, window: ScoreWindow, check_every_s: float, say) -> RollResult:
    for w in steps:
        info = RollInfo(model=new, replaces=old, weight=w, base_version=base.version)
        sched = schedules.publish(plane.bootstrap, split_schedule(base, new, old, w), plane.topics.schedules,
                                  plane.topics.lifecycle, roll=info)
        result.schedule_versions.append(sched.version)
        _event(plane, "roll_step", result, weight=w, schedule_version=sched.version)
        say(f"  step {w:>3} %: schedule v{sched.version} published; guards watch for {every_s:g} s")
        step_started = now_ms()
        end = time.monotonic() + every_s
        waiting = False
        while True:
            window.poll()
            breaches = check_guards(g, window.samples, new, old)
            if not breaches and time.monotonic() >= end:
                seen = scores_of(window, new)
                if seen >= g.min_scores:
                    break
                if time.monotonic() >= end + g.evidence_wait_s:
                    breaches = [f"no evidence: {new} scored {seen} requests in the last {g.window_s:g} s "
                                f"(the guards judge from {g.min_scores}) after {every_s + g.evidence_wait_s:g} s "
                                "of this step: is traffic flowing, is its job running (`rendezvous models`)? For a "
                                "quiet model, a longer --window or fewer --min-scores"]
                elif not waiting:
                    waiting = True
                    say(f"  step {w:>3} %: {new} scored {seen} requests in the window, the guards judge from "
                        f"{g.min_scores}: waiting up to {g.evidence_wait_s:g} s more")
            if breaches:
                result.breaches = breaches
                _event(plane, "guard_breached", result, weight=w, schedule_version=sched.version,
                       breaches=breaches, after_ms=now_ms() - step_started)
                say("  guard crossed: " + "; ".join(breaches))
                rb = rollback(plane, reason="guard: " + "; ".join(breaches), progress=say)
                result.rolled_back, result.rollback_version = True, rb.version
                return result
            time.sleep(check_every_s)
        st = window.stats()
        result.steps_done.append(w)
        _event(plane, "guard_passed", result, weight=w, schedule_version=sched.version,
               window={k: {"scores": v.scores, "errors": v.errors, "p99_ms": v.p99_ms}
                       for k, v in st.items() if k in (new, old, g.canary)})
    old_entry = registry.entries(plane).get(old)
    if old_entry is not None and old_entry.stage == "production":
        registry.set_stage(plane, old, "postproduction", reason=f"replaced by {new}; kept as the fallback")
    _event(plane, "roll_completed", result, schedule_version=result.schedule_versions[-1])
    say(f"rolled: {new} takes {old}'s traffic (schedule v{result.schedule_versions[-1]}); {old} is the fallback")
    return result


def rollback(plane: Plane, to: int | None = None, reason: str = "by hand",
             progress: Callable[[str], None] | None = None) -> Schedule:
    """Restore an earlier schedule in one step, published as the next version: `to`, else the schedule a
    roll started from when the active one is a roll's step, else the previous version. A rolled-in model
    that the restored schedule no longer names goes back to preproduction (its job keeps scoring)."""
    history = schedules.history(plane.bootstrap, plane.topics.schedules)
    if not history:
        raise RollError("no schedule is published: nothing to roll back")
    active = history[-1]
    by_version = {s.version: s for s in history}
    if to is None:
        if active.roll is not None:
            to = active.roll.base_version
        elif active.rollback_of is not None:
            raise RollError(f"the active schedule v{active.version} already restores an earlier one (it rolled back "
                            f"v{active.rollback_of}); say which version to restore with --to")
        elif len(history) >= 2:
            to = history[-2].version
        else:
            raise RollError(f"schedule v{active.version} is the only one published: nothing to roll back to")
    if to not in by_version:
        raise RollError(f"schedule v{to} is not in the schedules topic (kept: {sorted(by_version)})")
    target = by_version[to]
    known = registry.entries(plane)
    # the models it names must still be able to serve: a rolled-in model goes back to preproduction with this
    # rollback, so it is allowed; anything else outside production/postproduction is refused
    allow = {active.roll.model} if active.roll is not None else set()
    body = registry.resolve(schedules.body(target), known, allow=allow)
    sched = schedules.publish(plane.bootstrap, body, plane.topics.schedules, plane.topics.lifecycle,
                              rollback_of=active.version)
    plane.record(LifecycleEvent(kind="rollback", schedule_version=sched.version, at_ms=now_ms(),
                                model_id=active.roll.model.partition("@")[0] if active.roll else None,
                                model_version=active.roll.model.partition("@")[2] if active.roll else None,
                                detail={"from_version": active.version, "restored_version": to, "reason": reason}))
    if progress:
        progress(f"  rolled back: schedule v{sched.version} restores v{to} (was v{active.version})")
    if active.roll is not None:
        known = registry.entries(plane)
        rolled, replaced = known.get(active.roll.model), known.get(active.roll.replaces)
        if rolled is not None and rolled.stage == "production" and not registry.names(sched, rolled):
            registry.set_stage(plane, rolled.key, "preproduction", reason=f"rolled back ({reason})")
            if progress:
                progress(f"  {rolled.key} is back in preproduction (its job keeps scoring)")
        if replaced is not None and replaced.stage == "postproduction" and registry.names(sched, replaced) \
                and not (rolled is not None and registry.names(sched, rolled)):
            registry.set_stage(plane, replaced.key, "production", reason="roll rolled back")
    return sched
