"""The consumer's rule: the first answer of a request id is its answer (bounded memory)."""

from tools.answers import AnswerView


def test_the_first_answer_wins_and_later_ones_are_counted():
    v = AnswerView()
    assert v.offer({"request_id": "a", "output": {"p": 1}})
    assert not v.offer({"request_id": "a", "output": {"p": 2}})
    assert v.offer({"request_id": "b"}) and "a" in v and v.duplicates == 1


def test_memory_is_bounded_oldest_forgotten_first():
    v = AnswerView(capacity=2)
    for rid in ("a", "b", "c"):
        assert v.offer({"request_id": rid})
    assert "a" not in v and "b" in v and "c" in v


def test_a_record_without_a_request_id_is_never_shown():
    assert not AnswerView().offer({"output": {}})
