"""Entry point: `flink run -pym jobs.external_state.main [--source-topic requests ...]`."""

import argparse

from jobs.common.entry import common_options, run
from jobs.external_state.pipeline import ExternalStateSettings, build


def main(argv=None) -> None:
    d = ExternalStateSettings(bootstrap="")
    p = argparse.ArgumentParser(description=__doc__)
    common_options(p, "external-state", d.checkpoint_interval_ms)
    p.add_argument("--source-topic", default=d.source_topic)
    p.add_argument("--sink-topic", default=d.sink_topic)
    p.add_argument("--quarantine-topic", default=d.quarantine_topic)
    p.add_argument("--group-id", default=d.group_id)
    p.add_argument("--start", choices=("committed", "earliest", "latest"), default=d.start)
    p.add_argument("--window-ms", type=int, default=d.window_ms)
    a = p.parse_args(argv)
    run(build, ExternalStateSettings(a.bootstrap, a.source_topic, a.sink_topic, a.quarantine_topic, a.group_id,
                                     a.start, a.window_ms, checkpoint_interval_ms=a.checkpoint_interval_ms), a)


if __name__ == "__main__":
    main()
