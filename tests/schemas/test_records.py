"""The contracts: records, the Flink types derived from them, the feature contract (no JVM)."""

import pytest
from pyflink.common import Types

from schemas import records
from schemas.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    FeatureVersionError,
    check_feature_version,
    feature_vector,
)
from schemas.flink_types import row_type, sql_columns
from schemas.model_card import ModelCard

RECORDS = [records.Request, records.Features, records.AugmentedRequest, records.Reason, records.QuarantineRecord,
           records.Score, records.Stage, records.Schedule, records.ModelTiming, records.Answer, records.LateScore,
           records.LifecycleEvent, records.ExpectationOutcome, records.QualityResult]


@pytest.mark.parametrize("model", RECORDS, ids=lambda m: m.__name__)
def test_derived_row_type_agrees_with_the_record(model):
    rt = row_type(model)
    assert rt.get_field_names() == list(model.model_fields)
    expected = {"STRING": Types.STRING(), "BIGINT": Types.LONG(), "DOUBLE": Types.DOUBLE(),
                "BOOLEAN": Types.BOOLEAN()}
    for (name, sql), ftype in zip(sql_columns(model), rt.get_field_types()):
        assert ftype == expected[sql], name


def test_sql_types_of_scalars_optionals_literals_and_nested():
    cols = dict(sql_columns(records.Answer))
    assert cols["request_id"] == "STRING"
    assert cols["model_id"] == "STRING"  # str | None
    assert cols["stage"] == "BIGINT"  # int | None
    assert cols["trigger"] == "STRING"  # Literal of str
    assert cols["is_default"] == "BOOLEAN"
    assert cols["output"] == "STRING" and cols["timings"] == "STRING"  # JSON-carried
    assert dict(sql_columns(records.Request))["amount"] == "DOUBLE"


def test_feature_vector_follows_the_names_and_flags():
    v = feature_vector({"amount": 10.0, "country": "US", "merchant_category": "crypto"},
                       {"entity_count": 1, "window_count": 2, "window_sum": 3.0, "ms_since_prev": None,
                        "amount_mean": 4.0, "amount_std": 5.0, "amount_zscore": 6.0})
    assert len(v) == len(FEATURE_NAMES)
    named = dict(zip(FEATURE_NAMES, v))
    assert named["foreign"] == 1.0 and named["risky_merchant"] == 1.0 and named["log_ms_since_prev"] == -1.0


def test_a_card_trained_on_other_features_is_refused_at_load():
    from model_udfs.base import make_runner

    check_feature_version("m@1", FEATURE_VERSION)
    check_feature_version("m@1", None)  # a model that reads no features
    card = ModelCard(model_id="m", version="1", runner="model_udfs.python_runners:ConstantRunner",
                     feature_version="features-v0")
    with pytest.raises(FeatureVersionError, match="features-v0.*retrain"):
        make_runner(card)
    assert make_runner(card.model_copy(update={"feature_version": FEATURE_VERSION})).card.key == "m@1"
