"""Entry point: `flink run -pym jobs.external_state.main [--settings JSON]` (see jobs.common.settings)."""

from jobs.common.entry import run
from jobs.common.settings import load_settings
from jobs.external_state.pipeline import build
from jobs.external_state.settings import ExternalStateSettings


def main(argv=None) -> None:
    run(build, load_settings(ExternalStateSettings, argv))


if __name__ == "__main__":
    main()
