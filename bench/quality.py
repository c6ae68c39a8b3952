"""What the quality gate costs, outside Flink: deriving the suite, opening the validator (importing
Great Expectations, building its context), validating batches of the load generator's records.

    python -m bench.quality [--batches 30] [--rows 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv=None) -> None:
    from jobs.quality.validate import BatchValidator
    from training.quality_profile import requests_suite
    from training.synthetic import TransactionGenerator

    a = argparse.ArgumentParser(description=__doc__)
    a.add_argument("--batches", type=int, default=30)
    a.add_argument("--rows", type=int, default=1000)
    args = a.parse_args(argv)
    t0 = time.perf_counter()
    suite = requests_suite()
    derive_s = time.perf_counter() - t0
    v = BatchValidator(suite, "requests")
    t0 = time.perf_counter()
    v.open()
    open_s = time.perf_counter() - t0
    gen = TransactionGenerator(seed=1)
    ms, passed = [], 0
    for _ in range(args.batches):
        now = int(time.time() * 1000)
        r = v.validate([json.dumps(gen.next(now).request) for _ in range(args.rows)], now, now, now_ms=now)
        ms.append(r.validation_ms)
        passed += r.success
    ms.sort()
    print(f"suite {suite['name']}@{suite['meta']['version']}: {len(suite['expectations'])} expectations, "
          f"derived in {derive_s:.2f} s; validator opened (GE imported, context built) in {open_s:.2f} s")
    print(f"{args.batches} batches of {args.rows} records: validation median {statistics.median(ms):.0f} ms, "
          f"max {ms[-1]:.0f} ms; {passed}/{args.batches} passed")


if __name__ == "__main__":
    main()
