"""Reading a metadata answer for named topics (jobs/common/topics.py), without a broker: which topics exist, with
which partitions, and a refusal said as one (the real broker's answers: tests/e2e/test_kafka_topics.py)."""

import pytest

from jobs.common.topics import TopicAccessError, parse_described


def described(name: str, code: int = 0, parts: tuple[int, ...] = ()) -> dict:
    return {"error_code": code, "name": name, "partitions": [{"error_code": 0, "partition_index": p} for p in parts]}


def test_existing_topics_give_their_partitions_in_order_and_missing_ones_are_left_out():
    got = parse_described([described("a", parts=(2, 0, 1)), described("gone", code=3), described("b", parts=(0,))])
    assert got == {"a": [0, 1, 2], "b": [0]}


def test_a_topic_still_being_created_is_not_there_yet():
    assert parse_described([described("new", code=5), described("empty")]) == {}


def test_a_topic_the_principal_may_not_describe_is_an_error_naming_it():
    with pytest.raises(TopicAccessError, match="'secret'.*READ or DESCRIBE"):
        parse_described([described("a", parts=(0,)), described("secret", code=29)])
