"""The benchmark's pure parts: its inputs and the README tables generated from its JSON (no JVM)."""

import json

import pytest

from bench.stages import MODELS, rendezvous_input, requests
from bench.table import cpu_markdown, markdown, stages_markdown
from schemas.records import Request, Score


def test_rendezvous_input_is_each_request_then_one_score_per_model():
    recs = [json.loads(r) for r in rendezvous_input(3, "p")]
    assert len(recs) == 3 * (1 + len(MODELS))
    first, scores = recs[0], [Score.model_validate(r) for r in recs[1:4]]
    assert [s.model_id for s in scores] == list(MODELS)
    assert {s.request_id for s in scores} == {first["request"]["request_id"]}
    assert all(Request.model_validate(json.loads(r)) for r in requests(5, "q"))


def test_tables_show_every_set_rate_and_stage():
    result = {"at": "2026-11-29", "runs": 3, "duration_s": 20, "backlog": 10000, "baseline_capacity_per_s": 9000.0,
              "sets": {"demo": {"capacity_per_s": 2000.0, "capacity_ratio": 0.222, "rates": {
                  "500": {"answers_per_s": 499.0, "unanswered": 0, "default_share": 0.0, "latency_p50_ms": 140.0,
                          "latency_p99_ms": 470.0, "overshoot_p99_ms": None, "cpu_ms_per_request": 3.9,
                          "last_deadline_ms": 600,
                          "cpu_ms_per_request_by_process": {"taskmanager jvm": 1.0, "python worker 1": 0.25,
                                                            "python worker 2": 0.5, "kafka": 0.5,
                                                            "load generator": 0.1, "total": 2.35}}}}}}
    table = markdown(result)
    assert "| demo | 500/s | 499 | 0 | 0.0 % | 140 / 470 ms (last deadline 600 ms) | - ms | 3.90 ms | 2000/s | 0.222 |" \
        in table
    assert "9000 records/s" in table
    assert "| demo | 500/s | 1.00 | 0.75 | 0.50 | 0.00 | 0.00 | 0.10 | 2.35 |" in cpu_markdown(result)
    st = stages_markdown({"n": 30000, "runs": 3, "requests_per_s": {"external_state": 7191, "rendezvous": None}})
    assert "| external_state | 7191 |" in st and "| rendezvous | - |" in st


def test_the_fault_table_is_generated_from_the_fault_tests_results(tmp_path):
    import json

    from bench.faults_table import load, markdown

    (tmp_path / "a.json").write_text(json.dumps({
        "fault": "taskmanager killed", "at": "2026-11-29", "scale": 1, "rate": 50, "duration_s": 30, "sent": 1500,
        "answered": 1500, "lost": 0, "duplicated": 0, "conflicting": 0, "max_answer_gap_ms": 18852.4,
        "default_share": 0.667, "faults": 1, "recover_answers": True}))
    table = markdown(load(tmp_path))
    assert "| taskmanager killed (1x, 50/s for 30 s) | 1,500 | 1,500 | 0 | 0 | 0 | 18.9 s | 66.7 % |" in table


def test_the_paths_table_puts_each_path_of_a_rate_side_by_side():
    from bench.table import paths_markdown

    def fig(p50, p99):
        return {"latency_p50_ms": p50, "latency_p99_ms": p99, "latency_p50_runs_ms": [p50, p50 + 1],
                "latency_p99_runs_ms": [p99, None], "unanswered": 0, "default_share": 0.1, "cpu_ms_per_request": 7.0}

    table = paths_markdown({"runs": 2, "duration_s": 15, "paths": ["kafka", "gateway"], "sets": {"synthetic": {
        "paths": {"kafka": {"100": fig(40.0, 200.0)}, "gateway": {"100": fig(43.5, 210.0)}}}}})
    assert "`python -m bench --paths kafka gateway`" in table
    assert "| synthetic | 100/s | kafka | 40.0 ms | 200.0 ms | 40.0, 41.0 | 200.0, - | 0 | 10.0 % | 7.00 ms |" in table
    assert "| synthetic | 100/s | gateway | 43.5 ms | 210.0 ms |" in table


def test_the_handover_table_gives_each_hand_over_a_row_and_each_job_its_median_against_the_baseline():
    from bench.handover import show_timeline, table, timeline, window

    sent = {f"r{i}": 1000.0 * i / 10 for i in range(100)}  # 10 requests/s for 10 s
    received = {r: t + (300 if 5000 <= t < 6000 else 50) for r, t in sent.items() if r != "r99"}
    # the slow second's answers spent their extra 250 ms in the rendezvous; every answer 10 ms to get there, 5 back
    answers = {r: {"is_default": r == "r3", "received_at_ms": sent[r] + 10, "answered_at_ms": received[r] - 5}
               for r in received}
    w = window(sent, received, answers, 0, 4999)
    assert (w["sent"], w["answered"], w["defaults"], w["p99_ms"]) == (50, 50, 1, 50.0)
    assert w["legs_p99_ms"] == {"to_rendezvous": 10, "in_rendezvous": 35, "to_client": 5}
    line = timeline(sent, received, 0, 10000, 4000, answers)
    assert [s for s, n, p99, m, _ in line if p99 > 100] == [1]  # the slow second, 1 s after `zero`
    assert line[5][4] == {"to_rendezvous": 10, "in_rendezvous": 285, "to_client": 5, "default": False}
    assert line[-1][1] == 9  # r99 was never answered
    assert timeline(sent, received, 0, 1000, 0)[0][4] == {}  # answers not kept: no legs

    def ho(job, before, whole, trans):
        mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}
        return {"job": job, "before": mk(before), "during": mk(whole), "transition": mk(trans), "timings_s": {},
                "steps_s": {"started": 0.0, "completed": 9.0}, "timeline": [[0, 10, before * 3, before * 3]]}

    r = {"rate": 10, "partitions": 2, "before_s": 60, "starting_nice": 19, "sent": 100, "answered": 100,
         "duplicates": 0, "conflicting": 0,
         "handovers": [ho("rendezvous", 100, 400, 110), ho("rendezvous", 100, 200, 150),
                       ho("rendezvous", 100, 300, 100), ho("external-state", 50, 50, 60)]}
    out = table(r)
    assert out.count("| rendezvous |") == 3 and out.count("| external-state |") == 1
    assert "- rendezvous, median of 3: transition p99 / baseline p99 1.10, whole hand-over p99 / baseline p99 3.00" in out
    assert "- external-state, median of 1: transition p99 / baseline p99 1.20" in out
    assert "+0 s: 10 answers, p99 300 ms" in show_timeline(r)  # a run from before the legs were kept
    r["handovers"][0]["timeline"] = [[0, 10, 300, 310, {"to_rendezvous": 10, "in_rendezvous": 290, "to_client": 10,
                                                        "default": True}]]
    assert "+0 s: 10 answers, p99 300 ms, max 310 ms (slowest: 10 ms to the rendezvous, 290 in it, 10 back, default)" \
        in show_timeline(r)
    for w, p99 in (("before", 10), ("during", 20), ("transition", 30)):
        r["handovers"][0][w]["legs_p99_ms"] = {"to_rendezvous": p99, "in_rendezvous": 70, "to_client": 5}
    assert ("p99 of each leg, ms (to the rendezvous / in it / back to the client): baseline 10 / 70 / 5; whole "
            "hand-over 20 / 70 / 5; transition 30 / 70 / 5") in show_timeline(r)


def test_the_handover_bench_alternates_the_jit_wait_by_round_and_gives_each_its_own_medians():
    from bench.handover import compilers_quiet_timeout, table
    from control.ops.handover import COMPILERS_QUIET_WAIT_S as ON

    assert [compilers_quiet_timeout("alternate", r) for r in range(4)] == [0.0, ON, 0.0, ON]
    assert {compilers_quiet_timeout("on", r) for r in range(3)} == {ON}
    assert {compilers_quiet_timeout("off", r) for r in range(3)} == {0.0}

    def ho(wait, trans):
        mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}
        return {"job": "rendezvous", "compilers_quiet_timeout_s": wait, "before": mk(100), "during": mk(200),
                "transition": mk(trans), "timings_s": {}}

    r = {"rate": 10, "partitions": 2, "before_s": 60, "starting_nice": 10, "sent": 100, "answered": 100,
         "duplicates": 0, "conflicting": 0, "handovers": [ho(0.0, 300), ho(ON, 120), ho(0.0, 250), ho(ON, 100)]}
    out = table(r)
    assert "- rendezvous (no JIT wait), median of 2: transition p99 / baseline p99 2.75" in out
    assert f"- rendezvous (JIT wait up to {ON:.0f} s), median of 2: transition p99 / baseline p99 1.10" in out
    r["handovers"] = r["handovers"][1::2]  # one setting only: no label
    assert "- rendezvous, median of 2: transition p99 / baseline p99 1.10" in table(r)


def test_the_handover_bench_alternates_held_compilers_and_shows_rounds_without_a_hand_over():
    from bench.handover import NONE, by_round, table
    from control.ops.handover import HOLD_COMPILERS_S as ON

    assert [by_round("alternate", r, ON) for r in range(4)] == [0.0, ON, 0.0, ON]
    assert {by_round("on", r, ON) for r in range(2)} == {ON} and {by_round("off", r, ON) for r in range(2)} == {0.0}
    mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}

    def ho(job, hold, trans, after):
        return {"job": job, "compilers_quiet_timeout_s": 0.0, "hold_compilers_s": hold, "before": mk(100),
                "during": mk(150), "transition": mk(trans), "after": mk(after), "timings_s": {}}

    r = {"rate": 10, "partitions": 2, "before_s": 60, "starting_nice": 10, "sent": 100, "answered": 100,
         "duplicates": 0, "conflicting": 0,
         "handovers": [ho("rendezvous", 0.0, 300, 100), ho("rendezvous", ON, 120, 130),
                       {**ho(NONE, 0.0, 105, 95), "compilers_quiet_timeout_s": None, "hold_compilers_s": None}]}
    out = table(r)
    assert "- rendezvous (no JIT wait, compilers not held), median of 1: transition p99 / baseline p99 3.00" in out
    assert "- rendezvous (no JIT wait, compilers held), median of 1: transition p99 / baseline p99 1.20, whole " \
           "hand-over p99 / baseline p99 1.50, 20 s after / baseline 1.30" in out
    assert "- none (load alone), median of 1: transition p99 / baseline p99 1.05" in out
    assert "| none (load alone) | 10/10 / 10/10 / 10/10 | 100 | 150 | 105 | 95 | 1.05 | 1.5 | 0.95 |" in out


def test_the_cpu_profile_tells_the_processes_of_a_hand_over_apart():
    from bench.handover import role

    java = "/usr/lib/jvm/java-17/bin/java -Xmx1g -classpath x"
    assert role(f"{java} org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint".split()) == "jobmanager"
    assert role(f"{java} org.apache.flink.runtime.taskexecutor.TaskManagerRunner -D "
                "taskmanager.resource-id=pinned-tmab12-0".split()) == "taskmanager pinned-tmab12-0"
    assert role(f"{java} org.apache.flink.runtime.taskexecutor.TaskManagerRunner".split()) == "taskmanager (shared)"
    assert role(f"{java} org.apache.flink.client.cli.CliFrontend run -d".split()) == "flink run"
    assert role(f"{java} kafka.Kafka run/kafka-conf/server.properties".split()) == "kafka"
    assert role(["/venv/bin/python", "-m", "pyflink.fn_execution.beam.beam_boot", "--id=2-1"]) == "python worker"
    assert role(["/usr/bin/du"]) == "du" and role([]) == "?"


def test_the_handover_bench_refuses_an_odd_number_of_alternating_rounds(capsys):
    import pytest

    from bench.handover import main

    with pytest.raises(SystemExit):
        main(["--compilers-quiet", "alternate", "--rounds", "3"])
    assert "needs an even --rounds" in capsys.readouterr().err


def test_the_new_versions_compiler_cpu_is_split_at_its_tokens():
    from bench.handover import new_compilers

    h = {"steps_s": {"transition": 10.0},
         "threads": [[-2, {"pinned-old-0: C2 CompilerThre": 0.5}],  # the old version's TaskManager: not counted
                     [3, {"pinned-new-0: C2 CompilerThre": 0.3, "pinned-new-0: rendezvous -> a": 0.2,
                          "pinned-old-0: C2 CompilerThre": 0.4}],
                     [9, {"pinned-new-0: C1 CompilerThre": 0.1}],
                     [12, {"pinned-new-0: C2 CompilerThre": 0.25}],
                     [45, {"pinned-new-0: C2 CompilerThre": 1.0}]]}  # past the 30 s after the tokens
    assert new_compilers(h) == (0.4, 0.2, 30.0)
    assert new_compilers(h, 2.0) == (0.4, 0.2, 2.0)
    h["threads"] = h["threads"][:-1]  # the samples end 2 s after the tokens: that is all they cover
    assert new_compilers(h) == (0.4, 0.2, 2.0)
    assert new_compilers({"steps_s": {}, "threads": []}) is None
    h["threads"] = h["threads"][1:]  # nothing sampled before the hand-over: old and new cannot be told apart
    assert new_compilers(h) is None


def test_the_handover_bench_alternates_the_starting_priority_by_round():
    from bench.handover import starting_nice, variant

    assert [starting_nice(10, 19, r) for r in range(4)] == [10, 19, 10, 19]
    assert {starting_nice(10, 0, r) for r in range(3)} == {10}
    assert variant({"hold_compilers_s": 30.0, "starting_nice": 19}) == "compilers held, started at nice 19"
    assert variant({"promote_at_tokens": True}) == "priorities swapped at the tokens"
    assert variant({"promote_at_tokens": False}) == "new version promoted before"
    assert variant({"jobmanager_lowered": True}) == "JobManager lowered as the old stops"
    assert variant({"jobmanager_lowered": False}) == "JobManager as it is"


def test_the_handover_bench_tells_rounds_with_and_without_a_shadow_apart():
    from bench.handover import table, variant

    mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}
    base = {"job": "rendezvous", "hold_compilers_s": 30.0, "before": mk(100), "during": mk(150), "after": mk(100),
            "timings_s": {}}
    off, on = {**base, "shadow_s": 0.0, "transition": mk(200)}, {**base, "shadow_s": 10.0, "shadow_records": 812,
                                                                  "transition": mk(120)}
    es = {**base, "job": "external-state", "transition": mk(150)}  # a run from before shadows: no shadow label
    es_on = {**base, "job": "external-state", "shadow_s": 10.0, "shadow_records": 640, "transition": mk(110)}
    assert (variant(off), variant(on), variant(es)) == ("compilers held, no shadow", "compilers held, a shadow for "
                                                        "10 s", "compilers held")
    r = {"rate": 10, "partitions": 2, "before_s": 60, "starting_nice": 19, "sent": 100, "answered": 100,
         "duplicates": 0, "conflicting": 0, "handovers": [off, on, es, es_on]}
    out = table(r)
    assert "- rendezvous (compilers held, no shadow), median of 1: transition p99 / baseline p99 2.00" in out
    assert "- rendezvous (compilers held, a shadow for 10 s), median of 1: transition p99 / baseline p99 1.20" in out
    assert "- external-state (compilers held, a shadow for 10 s), median of 1: transition p99 / baseline p99 1.10" \
        in out
    assert "- rendezvous: ; 812 shadow records before its tokens" in out
    assert "- external-state: ; 640 shadow records before its tokens" in out


def test_the_handover_bench_alternates_the_new_versions_jvm_options_by_round():
    from bench.handover import jvm_args_of, table, variant

    assert [jvm_args_of("", "-XX:CompileThresholdScaling=0.1", r) for r in range(4)] == [
        "", "-XX:CompileThresholdScaling=0.1", "", "-XX:CompileThresholdScaling=0.1"]
    assert {jvm_args_of("-Xss2m", None, r) for r in range(3)} == {"-Xss2m"}  # not alternating: the runtime's
    mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}
    base = {"job": "rendezvous", "before": mk(100), "during": mk(150), "after": mk(100), "timings_s": {}}
    plain, scaled = ({**base, "jvm_args": "", "transition": mk(200)},
                     {**base, "jvm_args": "-XX:CompileThresholdScaling=0.1", "transition": mk(105)})
    assert (variant(plain), variant(scaled), variant(base)) == (
        "JVM options (defaults)", "JVM options -XX:CompileThresholdScaling=0.1", "")
    out = table({"rate": 10, "partitions": 2, "before_s": 60, "starting_nice": 19, "sent": 100, "answered": 100,
                 "duplicates": 0, "conflicting": 0, "handovers": [plain, scaled]})
    assert "JVM options alternating by round: '(defaults)' / '-XX:CompileThresholdScaling=0.1'" in out
    assert "- rendezvous (JVM options (defaults)), median of 1: transition p99 / baseline p99 2.00" in out
    assert "- rendezvous (JVM options -XX:CompileThresholdScaling=0.1), median of 1: transition p99 / baseline " \
           "p99 1.05" in out


def test_the_handover_timeline_gives_each_second_of_the_transition_against_the_baseline():
    from bench.handover import show_timeline

    mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}
    h = {"job": "rendezvous", "before": mk(100.0), "steps_s": {"transition": 40.6, "completed": 43.2},
         "timeline": [[38, 60, 90.0, 95, {}], [39, 60, 250.0, 260, {}], [40, 60, 120.0, 130, {}],
                      [41, 60, 80.0, 85, {}], [42, 60, 100.0, 100, {}], [43, 60, 70.0, 75, {}],
                      [44, 60, 300.0, 300, {}]]}  # sent in [40, 41): [-0.6, +0.4) s from the tokens: "-1 s"
    out = show_timeline({"handovers": [h]})
    assert "each second from 1 s before its tokens to its old version's stop: -1 s 1.2 +0 s 0.8 +1 s 1.0 +2 s 0.7\n" \
        in out  # 39 began 1.6 s before the tokens, 44 after the stop: neither is in it



def test_the_handover_timeline_lists_slow_answers_in_bursts_and_the_checkpoints_around_the_tokens(monkeypatch):
    from bench.handover import CheckpointLog, bursts, show_timeline, slow

    sent = {"a": 1000.0, "b": 1050.0, "c": 1400.0, "d": 2500.0, "e": 900.0}
    received = {"a": 1300.0, "b": 1100.0, "c": 1700.0, "d": 2900.0, "e": 1300.0}
    answers = {"a": {"received_at_ms": 1200, "answered_at_ms": 1280, "is_default": True}}
    # over 200 ms, sent from 950 ms on, times after the tokens at 1000 ms
    rows = slow(sent, received, answers, 950.0, 3000.0, 1000.0, 200.0)
    assert rows == [[0, 300, 200, 80, 20, True], [400, 300, None, None, None, None], [1500, 400, None, None, None,
                                                                                           None]]
    assert bursts(rows) == ["+0..+0: 1, 300 ms (200 / 80 / 20, default)", "+400..+400: 1, 300 ms (None / None / None)",
                            "+1500..+1500: 1, 400 ms (None / None / None)"]
    assert bursts([[0, 300, 1, 2, 3, False], [150, 310, 4, 5, 6, False], [300, 250, 7, 8, 9, False]]) == [
        "+0..+300: 3, 310 ms (4 / 5 / 6)"]  # each less than 200 ms after the one before: one burst

    polled = []

    def rest(s, path):
        polled.append(path)
        return {"history": [{"id": 1, "status": "COMPLETED", "trigger_timestamp": 10, "latest_ack_timestamp": 30,
                             "is_savepoint": True}]}

    import bench.handover as bh

    monkeypatch.setattr(bh.jobs, "flink_rest", rest)
    log = CheckpointLog(None, {"j-old": "rendezvous (old)", "j-new": "rendezvous"})
    log.ended_job("j-old")
    log.poll()
    log.poll()  # a stopped job is read once more, then left alone
    assert polled == ["/jobs/j-old/checkpoints", "/jobs/j-new/checkpoints", "/jobs/j-new/checkpoints"]
    assert log.seen[("j-old", 1)] == {"job": "rendezvous (old)", "id": 1, "trigger_ms": 10, "ack_ms": 30,
                                      "status": "COMPLETED", "savepoint": True}

    log = CheckpointLog(None, {})  # not started: only its record of checkpoints
    log.seen = {("j1", 7): {"job": "rendezvous (old)", "id": 7, "trigger_ms": 5000, "ack_ms": 5040,
                            "status": "COMPLETED", "savepoint": False},
                ("j2", 3): {"job": "rendezvous", "id": 3, "trigger_ms": 4000, "ack_ms": -1, "status": "IN_PROGRESS",
                            "savepoint": True},
                ("j2", 1): {"job": "rendezvous", "id": 1, "trigger_ms": 100, "ack_ms": 150, "status": "COMPLETED",
                            "savepoint": False}}
    got = log.between(3000, 6000, 4500)
    assert got == [{"job": "rendezvous", "id": 3, "status": "IN_PROGRESS", "savepoint": True, "trigger_s": -0.5,
                    "took_ms": None},
                   {"job": "rendezvous (old)", "id": 7, "status": "COMPLETED", "savepoint": False, "trigger_s": 0.5,
                    "took_ms": 40}]

    mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}
    h = {"job": "rendezvous", "before": mk(100.0), "steps_s": {"transition": 40.6, "completed": 43.2}, "timeline": [],
         "checkpoints": got, "slow": rows}
    out = show_timeline({"handovers": [h]})
    assert "-0.50 rendezvous savepoint IN_PROGRESS; +0.50 rendezvous (old) 40" in out
    assert "+0..+0: 1, 300 ms (200 / 80 / 20, default); +400..+400" in out


def test_the_handover_timeline_shows_the_cpu_by_tenth_of_a_second_before_each_burst_of_slow_answers():
    from bench.handover import burst_spans, show_timeline

    rows = [[100, 300, 1, 2, 3, False], [150, 300, 1, 2, 3, False], [250, 300, 1, 2, 3, False],
            [2000, 400, 1, 2, 3, False]]  # a burst of three, then one alone
    assert burst_spans(rows) == [(100, 250)]
    mk = lambda p99: {"sent": 10, "answered": 10, "p50_ms": 1.0, "p99_ms": p99, "max_ms": p99, "defaults": 0}
    fine = [[-0.5, {"jobmanager (nice 0)": 0.09}], [-0.3, {"kafka (nice 0)": 0.02}],
            [0.2, {"jobmanager (nice 0)": 0.08, "kafka (nice 0)": 0.05, "bench (clients) (nice 0)": 0.01,
                   "gateway (nice 0)": 0.001}], [1.9, {"kafka (nice 0)": 0.03}]]
    h = {"job": "rendezvous", "before": mk(100.0), "steps_s": {}, "timeline": [], "slow": rows, "cpu_fine": fine}
    out = show_timeline({"handovers": [h]})
    # from 0.5 s before the first to 0.2 s after the last of the burst; the three that used the most
    assert "(s after the tokens: all, the top three): -0.3 0.02: kafka (nice 0) 0.02; +0.2 0.14: jobmanager (nice 0) " \
           "0.08, kafka (nice 0) 0.05, bench (clients) (nice 0) 0.01\n" in out + "\n"
    assert "+1.9" not in out.split("CPU s by")[1]


def test_the_job_stop_bench_splits_the_jobmanagers_cpu_into_compilers_and_the_rest():
    from bench.jobstop import medians, summary, used

    before = {1: ("C2 CompilerThre", 10.0), 2: ("C1 CompilerThre", 2.0), 3: ("flink-pekko.act", 1.0),
              4: ("C2 CompilerThre", 7.0)}
    # thread 4 (a C2 compiler thread) ended in between, thread 5 (another) started: counted thread by thread
    after = {1: ("C2 CompilerThre", 10.13), 2: ("C1 CompilerThre", 2.08), 3: ("flink-pekko.act", 1.11),
             5: ("C2 CompilerThre", 0.2), 6: ("flink-rest-serv", 0.03)}
    stop = used(before, after)
    assert list(stop) == ["C2 CompilerThre", "flink-pekko.act", "C1 CompilerThre", "flink-rest-serv"]
    assert summary(stop) == {"total": 0.55, "compilers": 0.41, "c2": 0.33, "rest": 0.14}
    r = {"jobmanager_jvm_args": "", "stops": [{"total": 9.0, "compilers": 9.0, "c2": 9.0, "rest": 0.0},
                                              {"total": 0.5, "compilers": 0.4, "c2": 0.3, "rest": 0.1},
                                              {"total": 0.7, "compilers": 0.4, "c2": 0.3, "rest": 0.3}]}
    # the first stop (a fresh JobManager compiling it) is left out
    assert medians(r) == ("JobManager JVM options '(the defaults)': median of 2 stops after the first: 0.60 CPU s, "
                          "JIT compilers 0.40 (C2 0.30), the rest 0.20")


def test_the_100_ms_cpu_samples_count_a_process_back_among_the_busy_ones_from_then_not_from_before():
    from bench.handover import fine_tick

    last: dict[int, float] = {}
    cpu = {1: 10.0, 2: 5.0}
    roles = {1: "jobmanager (nice 0)", 2: "kafka (nice 0)"}
    assert fine_tick(roles, last, cpu.get) == {}  # the first tick of each: nothing to count from
    cpu.update({1: 10.05, 2: 5.02})
    assert fine_tick(roles, last, cpu.get) == pytest.approx({"jobmanager (nice 0)": 0.05, "kafka (nice 0)": 0.02})
    cpu[1] = 12.0  # two seconds out of the busy ones (under 0.02 CPU s in a second), then back
    assert fine_tick({2: "kafka (nice 0)"}, last, cpu.get) == {}
    assert fine_tick(roles, last, cpu.get) == {}  # not the 1.95 s used meanwhile
    cpu[1] = 12.1
    assert fine_tick(roles, last, lambda p: None if p == 2 else cpu[p]) == pytest.approx({"jobmanager (nice 0)": 0.1})


def test_the_checkpoint_log_keeps_each_checkpoints_latest_status_and_times_only_completed_ones(monkeypatch):
    import bench.handover as bh
    from bench.handover import CheckpointLog, bursts

    answers = [{"id": 4, "status": "IN_PROGRESS", "trigger_timestamp": 1000, "latest_ack_timestamp": 1050}]
    monkeypatch.setattr(bh.jobs, "flink_rest", lambda s, path: {"history": answers})
    log = CheckpointLog(None, {"j": "rendezvous"})
    log.poll()
    assert log.between(0, 2000, 0)[0]["took_ms"] is None  # acknowledged by some tasks only: not a duration
    answers[0] = {**answers[0], "status": "FAILED", "latest_ack_timestamp": None}
    log.poll()
    assert [(c["status"], c["took_ms"]) for c in log.between(0, 2000, 0)] == [("FAILED", None)]

    ended_during_the_get = []

    def rest(s, path):  # the job ends while its checkpoints are being read
        log.ended_job("j")
        ended_during_the_get.append(path)
        return {"history": answers}

    monkeypatch.setattr(bh.jobs, "flink_rest", rest)
    log.poll()
    assert "j" in log.labels  # read once more after it ended, at the next poll
    log.poll()
    assert "j" not in log.labels and len(ended_during_the_get) == 2
    # answers sent exactly 200 ms apart are not "less than 200 ms apart": two bursts
    assert len(bursts([[0, 300, 1, 2, 3, False], [200, 300, 1, 2, 3, False]])) == 2


def test_the_topic_metadata_bench_says_each_way_per_call_and_the_topics_the_broker_held():
    from bench.topic_metadata import WAYS, lines

    assert list(WAYS) == ["every topic", "named topic"]
    r = {"topics_held": 1213, "calls": 20,
         "ways": {"every topic": {"median_ms": 165.04, "broker_cpu_ms_per_call": 43.0},
                  "named topic": {"median_ms": 11.0, "broker_cpu_ms_per_call": 7.25}}}
    assert lines(r) == [
        "every topic: 165.0 ms per call (median of 20), the broker's CPU 43.0 ms per call; the broker held 1213 topics",
        "named topic: 11.0 ms per call (median of 20), the broker's CPU 7.2 ms per call; the broker held 1213 topics"]
