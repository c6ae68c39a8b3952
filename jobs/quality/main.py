"""Entry point: `flink run -pym jobs.quality.main --settings '{"suite": {...}}'` (see jobs.common.settings)."""

from jobs.common.entry import run
from jobs.common.settings import load_settings
from jobs.quality.pipeline import build
from jobs.quality.settings import QualitySettings


def main(argv=None) -> None:
    run(build, load_settings(QualitySettings, argv))


if __name__ == "__main__":
    main()
