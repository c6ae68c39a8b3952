"""The quality job: micro-batches of an input stream validated against an expectation suite (Great Expectations)."""
