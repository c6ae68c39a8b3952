"""Entry point: `flink run -pym jobs.rendezvous.main [--settings JSON]` (submitted in thread mode for timer
accuracy and state speed by `control.ops.deploy.deploy_rendezvous`)."""

from jobs.common.entry import run
from jobs.common.settings import load_settings
from jobs.rendezvous.pipeline import build
from jobs.rendezvous.settings import RendezvousSettings


def main(argv=None) -> None:
    run(build, load_settings(RendezvousSettings, argv))


if __name__ == "__main__":
    main()
