"""A pass-through job used by the runtime smoke test and as the benchmark's baseline."""
