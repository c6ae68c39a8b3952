"""Entry point: `flink run -pym jobs.rendezvous.main [--start latest ...]` (submitted in thread mode for
timer accuracy and state speed by `control.deploy.deploy_rendezvous`)."""

import argparse

from jobs.common.entry import common_options, run
from jobs.common.records import Schedule
from jobs.rendezvous.pipeline import RendezvousSettings, build


def main(argv=None) -> None:
    d = RendezvousSettings(bootstrap="")
    p = argparse.ArgumentParser(description=__doc__)
    common_options(p, "rendezvous", d.checkpoint_interval_ms)
    for name in ("augmented_topic", "scores_topic", "schedules_topic", "answers_topic", "late_topic",
                 "invalid_topic", "group_id"):
        p.add_argument("--" + name.replace("_", "-"), default=getattr(d, name))
    p.add_argument("--start", choices=("committed", "earliest", "latest"), default=d.start)
    p.add_argument("--builtin-schedule", default=None, help="schedule JSON used until one is published")
    p.add_argument("--orphan-timeout-ms", type=int, default=d.orphan_timeout_ms)
    p.add_argument("--answered-retention-ms", type=int, default=d.answered_retention_ms)
    a = p.parse_args(argv)
    run(build, RendezvousSettings(
        a.bootstrap, a.augmented_topic, a.scores_topic, a.schedules_topic, a.answers_topic, a.late_topic,
        a.invalid_topic, a.group_id, a.start,
        Schedule.parse(a.builtin_schedule) if a.builtin_schedule else d.builtin_schedule,
        a.orphan_timeout_ms, a.answered_retention_ms, a.checkpoint_interval_ms), a)


if __name__ == "__main__":
    main()
