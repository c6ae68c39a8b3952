"""Entry point: `flink run -pym jobs.models.main --settings '{"card": {...}}'` (see jobs.common.settings)."""

from jobs.common.entry import run
from jobs.common.settings import load_settings
from jobs.models.pipeline import build
from jobs.models.settings import ModelJobSettings


def main(argv=None) -> None:
    run(build, load_settings(ModelJobSettings, argv))


if __name__ == "__main__":
    main()
