"""Entry point: `flink run -pym jobs.rendezvous.main [--start latest ...]` (submit with
python.execution-mode=thread for timer accuracy; `control.jobs.submit_rendezvous` does)."""

import argparse
import os

from pyflink.datastream import StreamExecutionEnvironment

from jobs.common.records import Schedule
from jobs.rendezvous.pipeline import RendezvousSettings, build


def main(argv=None) -> None:
    d = RendezvousSettings(bootstrap="")
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bootstrap", default=os.environ.get("RENDEZVOUS_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    for name in ("augmented_topic", "scores_topic", "schedules_topic", "answers_topic", "late_topic",
                 "invalid_topic", "group_id"):
        p.add_argument("--" + name.replace("_", "-"), default=getattr(d, name))
    p.add_argument("--start", choices=("committed", "earliest", "latest"), default=d.start)
    p.add_argument("--builtin-schedule", default=None, help="schedule JSON used until one is published")
    p.add_argument("--orphan-timeout-ms", type=int, default=d.orphan_timeout_ms)
    p.add_argument("--answered-retention-ms", type=int, default=d.answered_retention_ms)
    p.add_argument("--checkpoint-interval-ms", type=int, default=d.checkpoint_interval_ms)
    p.add_argument("--buffer-timeout-ms", type=int, default=2,
                   help="flush network buffers after this long (Flink's default, 100 ms, delays every "
                        "record that crosses the keyBy by up to that)")
    p.add_argument("--job-name", default="rendezvous")
    a = p.parse_args(argv)
    settings = RendezvousSettings(
        a.bootstrap, a.augmented_topic, a.scores_topic, a.schedules_topic, a.answers_topic, a.late_topic,
        a.invalid_topic, a.group_id, a.start,
        Schedule.parse(a.builtin_schedule) if a.builtin_schedule else d.builtin_schedule,
        a.orphan_timeout_ms, a.answered_retention_ms, a.checkpoint_interval_ms)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(settings.checkpoint_interval_ms)
    env.set_buffer_timeout(a.buffer_timeout_ms)
    build(env, settings)
    env.execute(a.job_name)


if __name__ == "__main__":
    main()
