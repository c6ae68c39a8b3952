"""Lineage's graph from jobs' recorded parameters (control.ops.lineage, pure): topics read and written per job,
model dependencies from the cards, undeclared consumer groups of a model's output flagged."""

from __future__ import annotations

import json

from control.ops.lineage import Lineage, node_of, unrecorded
from jobs.common.entry import job_parameters
from jobs.common.settings import KafkaSettings
from jobs.external_state.settings import ExternalStateSettings
from jobs.models.settings import ModelJobSettings
from jobs.sql.metrics import metrics_script
from jobs.sql.settings import SqlSettings
from tools.cascade import A, B, cards

K = KafkaSettings(bootstrap_servers="x:1")


def node(jid, settings):
    return node_of(jid, settings.job_name, job_parameters(settings, "process"))


def graph(groups=None) -> Lineage:
    es = ExternalStateSettings(kafka=K, source_topic="rq", sink_topic="aug", quarantine_topic="q", group_id="es")
    a = ModelJobSettings(kafka=K, card=cards()[A], source_topic="aug", sink_topic="sc", inputs_topic="sc")
    b = ModelJobSettings(kafka=K, card=cards()[B], source_topic="aug", sink_topic="sc", inputs_topic="sc")
    sql = SqlSettings(kafka=K, script=metrics_script(), group_id="metrics", job_name="metrics",
                      topics={"scores": "sc", "answers": "an", "labels": "lb", "augmented_requests": "aug",
                              "metrics": "mx", "requests": "rq"})
    return Lineage.build([node("1", es), node("2", a), node("3", b), node("4", sql)], groups)


def test_jobs_read_and_write_what_their_settings_say():
    g = graph()
    by = {j.job_id: j for j in g.jobs}
    assert (by["1"].reads, by["1"].writes) == (("transitions", "rq"), ("aug", "q"))  # and the hand-overs registry
    assert (by["2"].reads, by["2"].writes, by["2"].model) == (("aug",), ("sc",), A)  # no inputs: no scores read
    assert (by["3"].reads, by["3"].inputs) == (("aug", "sc"), ("cascade-a",))
    assert set(by["4"].reads) == {"sc", "an", "lb", "aug"} and by["4"].writes == ("mx",)  # requests: not in it
    assert g.depends() == {B: ["cascade-a"]} and g.model_outputs() == {"sc": {A, B}}
    assert node_of("9", "foreign", {}) is None


def test_an_undeclared_group_on_a_models_output_is_flagged_and_declared_ones_are_not():
    g = graph({"es": {"rq"}, "model-cascade-b-1": {"aug", "sc"}, "metrics": {"sc", "an"}, "snoop": {"sc"},
               "other": {"rq"}})
    assert [(f.group, f.topic) for f in g.findings] == [("snoop", "sc")]
    text = "\n".join(g.lines())
    assert f"{B} <- cascade-a" in text and "UNDECLARED" in text and "'snoop' reads 'sc'" in text
    dot = g.dot()
    assert dot.startswith("digraph") and '"group:snoop"' in dot and "style=dashed" in dot
    assert "all declared" in "\n".join(graph({"es": {"rq"}}).lines())
    json.dumps(g.depends())


def test_a_job_without_recorded_settings_declares_the_group_named_after_it():
    g = Lineage.build(graph().jobs + [unrecorded("5", "metrics-metrics-x"), unrecorded("6", "adhoc")],
                      {"metrics-metrics-x": {"sc"}, "sql-adhoc": {"sc"}, "metrics-metrics-y": {"sc"}})
    assert [f.group for f in g.findings] == ["metrics-metrics-y"]
    assert "[adhoc: a job without recorded settings (SQL), group adhoc or sql-adhoc] -> ?" in "\n".join(g.lines())


def test_the_layout_puts_each_node_one_layer_after_what_leads_to_it():
    g = graph({"snoop": {"sc"}})
    nodes, edges = g.layout()
    layer = {n: lay for n, _, _, lay, _ in nodes}
    kind = {n: k for n, _, k, _, _ in nodes}
    assert layer["topic:rq"] == layer["topic:transitions"] == 0  # no job writes them
    assert layer["job:1"] == 1 and layer["topic:aug"] == 2 and layer["job:2"] == layer["job:3"] == 3
    assert layer["topic:sc"] == 4 and layer["group:snoop"] == 5 and kind["group:snoop"] == "consumer"
    assert kind["job:2"] == "model" and kind["job:1"] == "job" and kind["topic:sc"] == "topic"
    assert ("topic:sc", "group:snoop", "undeclared") in edges and ("job:3", "topic:sc", "flow") in edges
    assert ("topic:sc", "job:3", "flow") in edges  # B reads its input from the scores topic: a cycle, drawn back
    rows = [(lay, r) for _, _, _, lay, r in nodes]
    assert len(set(rows)) == len(rows)  # one place per node
