"""Partitions of named topics from the real broker (jobs/common/topics.py, control/kafka_io.py): one metadata
request for those topics, not kafka-python's every-topic lookup."""

import pytest

from control import kafka_io
from control.kafka_io import ensure_topics
from jobs.common.topics import partitions
from schemas.topics import TopicSpec

pytestmark = pytest.mark.e2e


def test_partitions_of_named_topics_and_none_for_a_missing_one(stack, unique):
    three, one, missing = f"parts3-{unique}", f"parts1-{unique}", f"parts-missing-{unique}"
    ensure_topics(stack.bootstrap_servers, [TopicSpec(three)], partitions=3)
    ensure_topics(stack.bootstrap_servers, [TopicSpec(one)], partitions=1)
    try:
        got = kafka_io.partitions(stack.bootstrap_servers, [three, missing, one])
        assert got == {three: [0, 1, 2], one: [0]}
        tps = kafka_io.topic_partitions(stack.bootstrap_servers, [one, missing, three])
        assert [(tp.topic, tp.partition) for tp in tps] == [(one, 0), (three, 0), (three, 1), (three, 2)]
        assert kafka_io.partition_count(stack.bootstrap_servers, three) == 3
        assert kafka_io.partition_count(stack.bootstrap_servers, missing) == 0
        # as the jobs call it: kafka-python settings of their own
        assert partitions({"bootstrap_servers": stack.bootstrap_servers}, [one]) == {one: [0]}
        # asking never creates the topic
        adm = kafka_io.admin(stack.bootstrap_servers)
        try:
            assert missing not in set(adm.list_topics())
        finally:
            adm.close()
    finally:
        kafka_io.delete_topics(stack.bootstrap_servers, [three, one])
