"""``processors.deadlines.Deadlines``: the close timers' index of open keys, against a plain model."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from processors.deadlines import Deadlines

KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"])
TIMES = st.floats(min_value=0, max_value=20, allow_nan=False) | st.integers(0, 20).map(float)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.none() | TIMES, st.integers(0, 3)),
        st.tuples(st.just("due"), TIMES),
        st.tuples(st.just("all")),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(OPS)
def test_deadlines_hand_out_exactly_the_due_keys_in_order_once(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    d = Deadlines()
    model: dict[bytes, tuple[float, int]] = {}
    for op in ops:
        if op[0] == "set":
            _, key, due, partition = op
            d.set(key, due, partition)
            if due is None:
                model.pop(key, None)
            else:
                model[key] = (due, partition)
        elif op[0] == "due":
            now = op[1]
            expected = sorted((due, k, p) for k, (due, p) in model.items() if due <= now)
            assert d.pop_due(now) == [(k, p) for _due, k, p in expected]
            for _due, k, _p in expected:
                del model[k]  # handed out once: forgotten until set again
        else:
            assert sorted(d.pop_all()) == sorted((k, p) for k, (_due, p) in model.items())
            model.clear()
        assert d.index == model and len(d) == len(model)
    # nothing stale is kept: every bucket holds a key of the index, each key in one bucket
    buckets = d._buckets
    assert sum(len(b) for b in buckets.values()) == len(model)
    assert all(buckets for buckets in buckets.values())


def test_rescheduling_an_open_key_many_times_keeps_one_entry() -> None:
    """Each event moves a session's inactivity deadline: the index must not grow with them."""
    d = Deadlines()
    for i in range(10_000):
        d.set(b"s", 1000.0 + i * 0.37, 1)
    assert d.stats() == {"keys": 1, "buckets": 1}
    assert len(d._starts) <= 10_000  # starts of emptied buckets leave as they surface
    assert d.pop_due(5000.0) == [(b"s", 1)]
    assert d._starts == [] and d.stats() == {"keys": 0, "buckets": 0}


def test_an_open_key_is_held_once_however_often_it_is_rescheduled() -> None:
    """Each batch brings the key as a new bytes object: index and bucket keep the newest one,
    never one each (a million open sessions would hold every key twice)."""
    d = Deadlines()
    first, second = b"session-1", bytes(bytearray(b"session-1"))
    assert first is not second
    d.set(first, 100.0, 0)
    d.set(second, 205.5, 0)  # another bucket
    (stored,) = d.index
    (in_bucket,) = d._buckets[205]
    assert stored is second and in_bucket is second


def test_a_bucket_emptied_one_key_at_a_time_gives_its_memory_back() -> None:
    """A load opens many keys within a second; traffic then moves them out one by one. A set
    never shrinks by itself: the bucket is re-sized as it empties, keeping every key."""
    import sys

    d = Deadlines()
    keys = [b"k%05d" % i for i in range(10_000)]
    for k in keys:
        d.set(k, 500.5, 0)
    full = sys.getsizeof(d._buckets[500])
    for k in keys[:-100]:
        d.set(k, 900.0, 1)
    assert d._buckets[500] == set(keys[-100:])
    assert sys.getsizeof(d._buckets[500]) * 20 < full
    assert d.pop_due(600.0) == [(k, 0) for k in keys[-100:]]
