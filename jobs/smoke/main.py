"""Entry point: `flink run -pym jobs.smoke.main --settings '{"source_topic": "A", "sink_topic": "B"}'`."""

from jobs.common.entry import run
from jobs.common.settings import load_settings
from jobs.smoke.pipeline import build
from jobs.smoke.settings import SmokeSettings


def main(argv=None) -> None:
    run(build, load_settings(SmokeSettings, argv))


if __name__ == "__main__":
    main()
