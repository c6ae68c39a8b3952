"""The versioned schedule store (no JVM)."""

from jobs.rendezvous.schedule import BUILTIN_SCHEDULE, ScheduleStore
from schemas.records import Schedule, Stage


def sched(v: int) -> Schedule:
    return Schedule(version=v, name=f"s{v}", stages=[Stage(deadline_ms=10 * v + 10, models=["A"])],
                    default_output={})


def test_builtin_until_a_schedule_is_published():
    st = ScheduleStore()
    assert st.active is BUILTIN_SCHEDULE and st.active_version is None and st.get(None) is BUILTIN_SCHEDULE
    st.add(sched(1))
    assert st.active.version == 1 and st.get(0) is BUILTIN_SCHEDULE


def test_pending_requests_keep_their_version_and_a_late_older_version_does_not_win():
    st = ScheduleStore()
    st.add(sched(2))
    st.add(sched(1))  # arrives late (e.g. replayed): kept, not active
    assert st.active.version == 2 and st.get(1).version == 1 and st.get(2).version == 2


def test_eviction_keeps_the_newest_and_unknown_versions_get_the_active_one():
    st = ScheduleStore(keep=3)
    evicted = [v for i in range(1, 6) for v in st.add(sched(i))]
    assert evicted == [1, 2] and st.versions() == [3, 4, 5]
    assert st.get(1).version == 5 and st.get(99).version == 5


def test_restore_from_what_add_left_in_state():
    st = ScheduleStore(keep=4)
    state = {}
    for i in (1, 2, 3):
        st.add(sched(i))
        state[i] = sched(i).to_json()
    again = ScheduleStore(keep=4)
    again.restore(st.versions(), st.active_version, state.get)
    assert again.versions() == [1, 2, 3] and again.active.version == 3 and again.get(2) == sched(2)
