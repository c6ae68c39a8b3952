"""Lineage (the seed's "know every data dependency"): the graph of streams and jobs, which job reads and writes
which topic and which model depends on which, built from the running jobs' own parameters (the settings each
job records, `jobs.common.entry.job_parameters`: topics, consumer group, the model card with its `inputs`),
and checked against the broker's consumer groups: a group with committed offsets on a topic a model job
writes that no running job declares is an undeclared consumer of a model's output (`rendezvous lineage`).

`node_of`, `Lineage.build` and `Lineage.check` are pure; `read` asks Flink and Kafka.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

READ_FIELDS = ("source_topic", "augmented_topic", "scores_topic", "schedules_topic", "transitions_topic")
"""Settings fields naming a topic the job reads; every other `*_topic` field names one it writes."""


@dataclass(frozen=True)
class JobNode:
    job_id: str
    name: str
    kind: str  # the settings class, e.g. ModelJobSettings
    group_id: str | None
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    model: str | None = None  # id@version of a model job
    inputs: tuple[str, ...] = ()  # its card's inputs


def node_of(job_id: str, name: str, params: dict[str, str]) -> JobNode | None:
    """A job's node from its recorded parameters; None for a job that recorded none (not the project's)."""
    from jobs.common.entry import SETTINGS, SETTINGS_CLASS

    if SETTINGS not in params or SETTINGS_CLASS not in params:
        return None  # see `unrecorded`
    settings = json.loads(params[SETTINGS])
    kind = params[SETTINGS_CLASS].rpartition(":")[2]
    reads, writes = [], []
    card = settings.get("card") if kind == "ModelJobSettings" else None
    for f, v in settings.items():
        if not f.endswith("_topic") or not v:
            continue
        if f == "inputs_topic":
            if card and card.get("inputs"):
                reads.append(v)
        elif f in READ_FIELDS:
            reads.append(v)
        else:
            writes.append(v)
    if kind == "SqlSettings":  # tables: table name -> topic; INSERT INTO names what it writes
        script = settings.get("script", "")
        for table, topic in (settings.get("topics") or {}).items():
            if re.search(rf"INSERT\s+INTO\s+`?{re.escape(table)}`?\b", script, re.I):
                writes.append(topic)
            elif re.search(rf"\b{re.escape(table)}\b", script):
                reads.append(topic)
    model = f"{card['model_id']}@{card['version']}" if card else None
    return JobNode(job_id, name, kind, settings.get("group_id"), tuple(dict.fromkeys(reads)),
                   tuple(dict.fromkeys(writes)), model, tuple(card.get("inputs") or ()) if card else ())


UNRECORDED = "unrecorded"
"""The kind of a running job that recorded no settings in its job parameters: a continuous SQL job (the
metrics job, the decoy archive: `jobs.sql.main` runs the Table API, which does not carry them). Its consumer
group is taken from its name, as `control.ops.sql.submit` names it (`<name>` when given, as the metrics and
archive jobs do, else `sql-<name>`); its topics are not known."""


def unrecorded(job_id: str, name: str) -> JobNode:
    return JobNode(job_id, name, UNRECORDED, None, (), ())


@dataclass(frozen=True)
class Finding:
    group: str
    topic: str
    message: str


@dataclass
class Lineage:
    jobs: list[JobNode]
    groups: dict[str, set[str]] = field(default_factory=dict)  # consumer group -> topics it has offsets on
    findings: list[Finding] = field(default_factory=list)

    @classmethod
    def build(cls, jobs: list[JobNode], groups: dict[str, set[str]] | None = None) -> "Lineage":
        g = cls(jobs=sorted(jobs, key=lambda j: (j.kind, j.name)), groups=dict(groups or {}))
        g.findings = g.check()
        return g

    def model_outputs(self) -> dict[str, set[str]]:
        """Topic -> the model deployments writing it."""
        out: dict[str, set[str]] = {}
        for j in self.jobs:
            if j.model:
                for t in j.writes:
                    out.setdefault(t, set()).add(j.model)
        return out

    def depends(self) -> dict[str, list[str]]:
        """Model deployment -> the upstream models its card declares."""
        return {j.model: list(j.inputs) for j in self.jobs if j.model and j.inputs}

    def check(self) -> list[Finding]:
        """Undeclared consumers: groups with offsets on a model's output topic that no running job declares."""
        declared = {j.group_id for j in self.jobs if j.group_id} | {
            g for j in self.jobs if j.kind == UNRECORDED for g in (j.name, f"sql-{j.name}")}
        outputs = self.model_outputs()
        return [Finding(grp, t, f"consumer group {grp!r} reads {t!r}, the output of {', '.join(sorted(outputs[t]))}, "
                                f"and no running job declares it: an undeclared dependency on a model's output")
                for grp, topics in sorted(self.groups.items()) if grp not in declared
                for t in sorted(topics) if t in outputs]

    def layout(self) -> tuple[list[tuple[str, str, str, int, int]], list[tuple[str, str, str]]]:
        """The graph laid out in layers, for drawing: nodes (id, label, kind, layer, row) and edges (from, to, kind).
        Kinds of node: `topic`, `job`, `model` (a model job), `consumer` (an undeclared consumer group); of edge:
        `flow` (a job reads or writes a topic), `undeclared` (a group reads a model's output). A topic no job
        writes is in layer 0; every other node one layer after the first node that leads to it."""
        nodes: dict[str, tuple[str, str]] = {}
        edges: list[tuple[str, str, str]] = []
        for j in self.jobs:
            jid = f"job:{j.job_id}"
            nodes[jid] = (j.model or j.name, "model" if j.model else "job")
            for t in j.reads:
                nodes.setdefault(f"topic:{t}", (t, "topic"))
                edges.append((f"topic:{t}", jid, "flow"))
            for t in j.writes:
                nodes.setdefault(f"topic:{t}", (t, "topic"))
                edges.append((jid, f"topic:{t}", "flow"))
        for f in self.findings:
            nodes.setdefault(f"topic:{f.topic}", (f.topic, "topic"))
            nodes[f"group:{f.group}"] = (f.group, "consumer")
            edges.append((f"topic:{f.topic}", f"group:{f.group}", "undeclared"))
        written = {b for a, b, _ in edges if a.startswith("job:")}
        layer = {n: 0 for n in nodes if n.startswith("topic:") and n not in written}
        frontier = sorted(layer)
        while frontier:
            nxt = []
            for n in frontier:
                for a, b, _ in edges:
                    if a == n and b not in layer:
                        layer[b] = layer[n] + 1
                        nxt.append(b)
            frontier = sorted(nxt)
        last = max(layer.values(), default=0)
        for n in nodes:  # on a cycle only, or alone
            layer.setdefault(n, last + 1)
        rows: dict[int, int] = {}
        out = []
        for n in sorted(nodes, key=lambda n: (layer[n], nodes[n][1] != "topic", nodes[n][0])):
            rows[layer[n]] = rows.get(layer[n], -1) + 1
            out.append((n, nodes[n][0], nodes[n][1], layer[n], rows[layer[n]]))
        return out, edges

    def lines(self) -> list[str]:
        out = ["jobs (reads -> job -> writes):"]
        for j in self.jobs:
            if j.kind == UNRECORDED:
                out.append(f"  ? -> [{j.name}: a job without recorded settings (SQL), group {j.name} or "
                           f"sql-{j.name}] -> ?")
                continue
            what = f"model {j.model}" if j.model else j.kind.removesuffix("Settings")
            out.append(f"  {', '.join(j.reads) or '-'} -> [{j.name}: {what}, group {j.group_id}] -> "
                       f"{', '.join(j.writes) or '-'}")
        deps = self.depends()
        out.append("model dependencies (downstream <- upstream):" if deps else "model dependencies: none declared")
        out += [f"  {m} <- {', '.join(ins)}" for m, ins in sorted(deps.items())]
        if self.findings:
            out.append("UNDECLARED consumers of model outputs:")
            out += [f"  {f.message}" for f in self.findings]
        else:
            out.append("consumers of model outputs: all declared")
        return out

    def dot(self) -> str:
        """The graph in Graphviz's language (topics as ellipses, jobs as boxes, dependencies dashed)."""
        q = json.dumps
        out = ["digraph lineage {", "  rankdir=LR;"]
        for j in self.jobs:
            out.append(f"  {q('job:' + j.name)} [shape=box,label={q(j.model or j.name)}];")
            out += [f"  {q('topic:' + t)} -> {q('job:' + j.name)};" for t in j.reads]
            out += [f"  {q('job:' + j.name)} -> {q('topic:' + t)};" for t in j.writes]
        by_model = {j.model.partition("@")[0]: j.name for j in self.jobs if j.model}
        for j in self.jobs:
            for i in j.inputs:
                if i.partition("@")[0] in by_model:
                    out.append(f"  {q('job:' + by_model[i.partition('@')[0]])} -> {q('job:' + j.name)} "
                               f"[style=dashed,label=\"input\"];")
        for f in self.findings:
            out.append(f"  {q('topic:' + f.topic)} -> {q('group:' + f.group)} [color=red];")
            out.append(f"  {q('group:' + f.group)} [shape=octagon,color=red,label={q(f.group + ' (undeclared)')}];")
        topics = {t for j in self.jobs for t in j.reads + j.writes}
        out += [f"  {q('topic:' + t)} [shape=ellipse,label={q(t)}];" for t in sorted(topics)]
        return "\n".join(out + ["}"])


ACTIVE = ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING")


def running_nodes(s) -> list[JobNode]:
    from control.ops import jobs as jobs_lib

    out = []
    for j in jobs_lib.list_jobs(s):
        if j.state in ACTIVE:
            node = node_of(j.job_id, j.name, jobs_lib.job_parameters(j.job_id, s))
            out.append(node if node is not None else unrecorded(j.job_id, j.name))
    return out


def consumer_groups(bootstrap: str) -> dict[str, set[str]]:
    """Consumer group -> the topics it has committed offsets on (Flink's Kafka sources commit offsets without
    joining the group, so offsets, not members, show who reads)."""
    from control import kafka_io

    adm = kafka_io.admin(bootstrap)
    try:
        names = [g["group_id"] for g in adm.list_groups()]
        if not names:
            return {}
        return {group: {tp.topic for tp in offsets} for group, offsets in adm.list_group_offsets(names).items()}
    finally:
        adm.close()


def read(s=None) -> Lineage:
    from control.settings import RuntimeSettings

    s = s or RuntimeSettings()
    return Lineage.build(running_nodes(s), consumer_groups(s.bootstrap_servers))


def model_inputs(s=None) -> dict[str, list[str]]:
    """Model id -> its inputs, from the running model jobs' cards (what attribution follows upstream)."""
    from control.settings import RuntimeSettings

    out: dict[str, list[str]] = {}
    for j in running_nodes(s or RuntimeSettings()):
        if j.model:
            out.setdefault(j.model.partition("@")[0], []).extend(i for i in j.inputs if i not in out.get(
                j.model.partition("@")[0], []))
    return out
