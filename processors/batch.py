"""The per-record loops of ``processors.app.StateStage``, apart so the native build compiles them.

``StateStage`` itself subclasses nothing compiled and holds the Faust glue (agent, timer, locks);
what runs per record and per key of a batch or a close lives here: grouping a batch's records by
state key, loading / applying / storing each key's state once, and handing the outputs to the
shared producer (packed where declared). ``stage`` is the ``StateStage`` (its hooks ``items``,
``new_state``, ``apply_items``, ``stateless``, ``deadline`` and its ``deadlines`` index); typed
loosely because the compiled code checks declared classes at run time and the stage class is
interpreted.
"""

from __future__ import annotations

from typing import Any

import orjson

from processors.output import Output
from schemas.framing import pack

Send = tuple[str, bytes | None, bytes]  # (topic, key, value)
Item = tuple[Any, Any]  # (the Kafka message it came in, one decoded record)
#: (topic, partition) -> state key -> its records, in arrival order
Groups = dict[tuple[str, int], dict[bytes, list[Item]]]


def group_records(stage: Any, msgs: list[Any], sends: list[Send]) -> tuple[Groups, list[Item]]:
    """A batch's records by (topic, partition) and state key; records without a key apart."""
    by_partition: Groups = {}
    skipped: list[Item] = []
    items = stage.items
    for msg in msgs:
        records: list[tuple[bytes | None, Any]] = items(msg, sends)
        if not records:
            continue
        where = (msg.topic, msg.partition)
        by_key = by_partition.get(where)
        if by_key is None:
            by_key = by_partition[where] = {}
        for key, record in records:
            if key is None:
                skipped.append((msg, record))
                continue
            group = by_key.get(key)
            if group is None:
                by_key[key] = [(msg, record)]
            else:
                group.append((msg, record))
    return by_partition, skipped


def apply_groups(
    stage: Any,
    store: Any,
    partition: int,
    by_key: dict[bytes, list[Item]],
    now: float,
    sends: list[Send],
    horizon: int | None = None,
) -> int:
    """Load each key's state once (a new one when absent), apply its records, store it once
    when it changed (or is new) and schedule its next deadline. With a ``horizon`` (epoch us),
    a key without state first has its records older than it refused (``stage.refuse_old``).
    Returns the newest event time (``mt``, epoch us) of the states applied to (0: none)."""
    new_state = stage.new_state
    apply_items = stage.apply_items
    deadline = stage.deadline
    schedule = stage.deadlines.set
    get, put = store.get, store.set
    newest = 0
    for key, group in by_key.items():
        raw = get(key)
        if raw is not None:
            state = orjson.loads(raw)
        else:
            if horizon is not None:
                group = stage.refuse_old(group, horizon, sends)
                if not group:
                    continue
            state = new_state(key, partition)
        if apply_items(state, group, now, sends) or raw is None:
            put(key, orjson.dumps(state))
            schedule(key, deadline(state), partition)
        mt = state.get("mt")
        if type(mt) is int and mt > newest:
            newest = mt
    return newest


def step_keys(
    stage: Any,
    store: Any,
    partition: int,
    keys: list[bytes],
    now: float,
    drain: bool,
    writes: list[tuple[bytes, Any, Any]],
    sends: list[Send],
) -> int:
    """A close's timer step on each due key of one partition: (key, store, new state) to store
    into ``writes``, outputs into ``sends``; a key whose step changes nothing is scheduled
    again. Returns how many keys had no stored state (stale index entries)."""
    step = stage.step
    schedule = stage.deadlines.set
    deadline = stage.deadline
    get = store.get
    stale = 0
    for key in keys:
        raw = get(key)
        if raw is None:
            stale += 1
            continue
        state = orjson.loads(raw)
        new, out = step(state, now, drain)
        if new is None:
            schedule(key, deadline(state), partition)
            continue
        writes.append((key, store, new))
        sends.extend(out)
    return stale


def store_all(stage: Any, writes: list[tuple[bytes, Any, Any]]) -> None:
    """Store the states a close changed (after its outputs were acknowledged) and schedule them."""
    schedule = stage.deadlines.set
    deadline = stage.deadline
    for key, store, new in writes:
        store.set(key, orjson.dumps(new))
        schedule(key, deadline(new), store.partition)


def send_all(output: Output, sends: list[Send], packed_topics: frozenset[str]) -> None:
    """Enqueue outputs on the shared producer: records to ``packed_topics`` packed
    (``schemas.framing.pack``) into as few messages as possible, the others one per message."""
    packed: dict[str, list[bytes]] = {}
    for topic, k, v in sends:
        if topic in packed_topics:
            values = packed.get(topic)
            if values is None:
                packed[topic] = [v]
            else:
                values.append(v)
        else:
            output.send(topic, k, v)
    for topic, values in packed.items():
        for value in pack(values):
            output.send(topic, None, value)
    output.poll()
