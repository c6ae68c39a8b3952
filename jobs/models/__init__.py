"""A model job: one Flink job per model deployment (model id + version, from a model card)."""
