"""Each job's settings object: one default per field, environment prefix, submitted whole (no JVM)."""

import pytest
from pydantic import ValidationError

from control.ops.deploy import ENTRY_POINTS, job_settings
from control.settings import RuntimeSettings
from jobs.common.settings import KafkaSettings, load_settings
from jobs.external_state.settings import ExternalStateSettings
from jobs.models.settings import INPUTS_UID, ModelJobSettings
from jobs.quality.settings import QualitySettings
from jobs.rendezvous.settings import RendezvousSettings
from jobs.smoke.settings import SmokeSettings
from schemas.model_card import ModelCard
from schemas.records import Schedule, Stage

CARD = ModelCard(model_id="m", version="2", runner="model_udfs.python_runners:ConstantRunner")
EXAMPLES = [
    ExternalStateSettings(window_ms=10_000, group_id="g"),
    ModelJobSettings(card=CARD, start="latest"),
    RendezvousSettings(orphan_timeout_ms=3000, builtin_schedule=Schedule(
        version=0, stages=[Stage(deadline_ms=5, models=["m"])], default_output={"x": 1})),
    SmokeSettings(source_topic="a", sink_topic="b"),
    QualitySettings(suite={"name": "s", "expectations": [], "meta": {"version": "v"}}, batch_records=5),
]


@pytest.mark.parametrize("settings", EXAMPLES, ids=lambda s: type(s).__name__)
def test_submitted_whole_and_loaded_back_equal(settings):
    argv = settings.to_argv()
    assert argv[0] == "--settings" and len(argv) == 2
    assert load_settings(type(settings), argv) == settings
    assert type(settings) in ENTRY_POINTS


def test_model_job_names_come_from_the_card():
    s = ModelJobSettings(card=CARD)
    assert (s.job_name, s.group_id, s.uid_prefix) == ("model m@2", "model-m-2", "model-m")
    assert ModelJobSettings(card=CARD, group_id="x").group_id == "x"


def test_environment_prefix_per_job(monkeypatch):
    monkeypatch.setenv("RENDEZVOUS_RENDEZVOUS_ORPHAN_TIMEOUT_MS", "1234")
    monkeypatch.setenv("RENDEZVOUS_EXTERNAL_STATE_WINDOW_MS", "777")
    assert RendezvousSettings().orphan_timeout_ms == 1234
    assert ExternalStateSettings().window_ms == 777
    assert load_settings(RendezvousSettings, []).orphan_timeout_ms == 1234  # run by hand: env and defaults


def test_unknown_or_invalid_fields_are_errors_that_name_them():
    with pytest.raises(ValidationError, match="orphan_timeout"):
        RendezvousSettings(orphan_timeout=5)
    with pytest.raises(ValidationError, match="window_ms"):
        ExternalStateSettings(window_ms=0)


def test_kafka_properties_reach_every_job_and_never_print(monkeypatch):
    monkeypatch.setenv("RENDEZVOUS_KAFKA_PROPERTIES",
                       '{"security.protocol": "SASL_SSL", "sasl.jaas.config": "user=u password=secret"}')
    rt = RuntimeSettings()
    s = job_settings(RendezvousSettings, rt, job_name="rv")
    assert s.kafka.properties["security.protocol"] == "SASL_SSL"
    assert s.kafka.bootstrap_servers == rt.bootstrap_servers
    assert "secret" not in repr(s.kafka) and "secret" not in str(s)
    assert load_settings(RendezvousSettings, s.to_argv()).kafka.properties == s.kafka.properties
    assert KafkaSettings().properties == {}


def test_quality_settings_need_a_suite_and_say_how_to_get_one():
    with pytest.raises(ValidationError, match="rendezvous quality suite"):
        QualitySettings(suite={"expectations": "nope"})
    with pytest.raises(ValidationError, match="suite"):
        QualitySettings()


@pytest.mark.parametrize("settings", EXAMPLES, ids=lambda s: type(s).__name__)
def test_job_parameters_resubmit_the_same_job_without_its_kafka_credentials(settings):
    """What a job records of itself for `rendezvous job rescale`: enough to submit it again, and no secret."""
    import json

    from jobs.common.entry import EXECUTION_MODE, SETTINGS_CLASS, job_parameters
    from jobs.common.entry import SETTINGS as SETTINGS_KEY

    secret = settings.model_copy(update={"kafka": KafkaSettings(properties={"sasl.jaas.config": "password=\"s3\""})})
    params = job_parameters(secret, "thread")
    assert "s3" not in json.dumps(params)
    cls = {f"{c.__module__}:{c.__qualname__}": c for c in ENTRY_POINTS}[params[SETTINGS_CLASS]]
    again = job_settings(cls, RuntimeSettings(), **json.loads(params[SETTINGS_KEY]))
    assert again.model_dump(exclude={"kafka"}) == settings.model_dump(exclude={"kafka"})
    assert params[EXECUTION_MODE] == "thread"


def test_control_topics_keep_one_partition_under_any_names():
    from schemas.topics import TOPICS, TopicNames

    single = {t.name for t in TOPICS if t.single_partition}
    assert single == {"schedules", "lifecycle", "models", "transitions"}
    specs = TopicNames.suffixed("x").specs()
    assert {s.name for s in specs if s.single_partition} == {f"{n}-x" for n in single}
    assert next(s for s in specs if s.name == "answers-x").config == {"message.timestamp.type": "LogAppendTime"}


@pytest.mark.parametrize("settings", EXAMPLES, ids=lambda s: type(s).__name__)
def test_jobs_record_the_encodings_of_their_state_and_their_code(settings):
    """What `rendezvous job upgrade` compares with the new code before it stops a job: per operator uid, the
    version written and every version read (the writer's included)."""
    import json

    from jobs.common.entry import CODE, STATE, job_parameters

    params = job_parameters(settings, "thread", "abc123")
    state = json.loads(params[STATE])
    assert state == {uid: e.as_json() for uid, e in type(settings).state_encodings().items()}
    assert all(e["writes"] in e["reads"] for e in state.values())
    assert params[CODE] == "abc123"


def test_the_declared_readers_are_the_code_that_reads():
    from jobs.external_state.features import ENTITY_STATE_VERSION, FEATURES_UID
    from jobs.quality.batching import BATCHES_UID
    from jobs.rendezvous.mailbox import (
        MAILBOX_READS,
        MAILBOX_UID,
        StateVersionError,
        from_state,
    )

    assert RendezvousSettings.state_encodings()[MAILBOX_UID].reads == MAILBOX_READS
    assert ExternalStateSettings.state_encodings()[FEATURES_UID].writes == ENTITY_STATE_VERSION
    assert set(QualitySettings.state_encodings()) == {BATCHES_UID}
    assert set(ModelJobSettings.state_encodings()) == {INPUTS_UID} and SmokeSettings.state_encodings() == {}
    for v in MAILBOX_READS:  # every declared version is read (9 fields; 3 adds the return address, 4 the foreign flag)
        extra = {3: ("answers.gw",), 4: (None, True)}.get(v, ())
        assert from_state("r", (v, 1, None, None, None, 0, None, None, (), *extra)).request_id == "r"
    with pytest.raises(StateVersionError, match=r"reads versions \[1, 2, 3, 4\]"):
        from_state("r", (max(MAILBOX_READS) + 1, 1, None, None, None, 0, None, None, ()))
