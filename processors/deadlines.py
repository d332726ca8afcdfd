"""The close timers' index of open keys (``processors.app.StateStage``), compiled by the native
build (``schemas._native``): every state write reschedules its key."""

from __future__ import annotations

import heapq
import math


class Deadlines:
    """When the close timer must look at each open key: key -> (deadline, partition), and the
    keys due by a time.

    Keys sit in one-second buckets (a timing wheel over a heap of bucket starts): rescheduling a
    key - every event moves its session's inactivity deadline - moves it between two sets in
    O(1), and nothing stale accumulates (a heap of (deadline, key) entries kept one entry per
    reschedule until it surfaced: up to 2x the keys, the memory growing under traffic into
    open sessions). ``pop_due`` hands each due key out once, in deadline order, and forgets it:
    whoever takes it must ``set`` it again (``StateStage._close`` does, for every state it reads).
    """

    __slots__ = ("_buckets", "_started", "_starts", "index")

    def __init__(self) -> None:
        self.index: dict[bytes, tuple[float, int]] = {}
        self._buckets: dict[int, set[bytes]] = {}
        self._starts: list[int] = []  # heap of bucket starts (s), each once: ``_started``
        self._started: set[int] = set()

    def __len__(self) -> int:
        return len(self.index)

    def set(self, key: bytes, due: float | None, partition: int) -> None:
        """Schedule ``key`` at ``due`` (None: never; forgotten)."""
        index = self.index
        old = index.get(key)
        if old is not None:
            was = math.floor(old[0])
            if due is not None and math.floor(due) == was:  # same bucket: it stays there
                index[key] = (due, partition)
                return
            bucket = self._buckets.get(was)
            if bucket is not None:
                bucket.discard(key)
                left = len(bucket)
                if not left:
                    del self._buckets[was]  # its start leaves the heap when it surfaces
                elif left >= 64 and not left & (left - 1):
                    # a set never shrinks: a bucket filled by a burst (a load) and emptied one
                    # reschedule at a time would keep its peak size; re-sized at each power of two
                    self._buckets[was] = set(bucket)
            # re-inserted, so the index and the new bucket hold the same key object (an update
            # would keep the old one in the index: two copies of every key rescheduled)
            del index[key]
        if due is None:
            return
        index[key] = (due, partition)
        start = math.floor(due)
        bucket = self._buckets.get(start)
        if bucket is None:
            bucket = self._buckets[start] = set()
            if start not in self._started:
                self._started.add(start)
                heapq.heappush(self._starts, start)
        bucket.add(key)

    def pop_due(self, now: float) -> list[tuple[bytes, int]]:
        """(key, partition) of every key due by ``now``, in deadline order, each removed."""
        out: list[tuple[bytes, int]] = []
        starts, buckets, index = self._starts, self._buckets, self.index
        while starts and starts[0] <= now:
            start = starts[0]
            bucket = buckets.get(start)
            whole = start + 1 <= now
            if bucket is None or whole:
                heapq.heappop(starts)
                self._started.discard(start)
                if bucket is None:
                    continue
                del buckets[start]
                keys: set[bytes] = bucket
            else:  # the bucket of ``now``: only the keys whose deadline passed
                keys = {k for k in bucket if (e := index.get(k)) is not None and e[0] <= now}
                bucket -= keys
                if not bucket:
                    del buckets[start]
            due = []
            for key in keys:
                entry = index.pop(key, None)
                if entry is not None:
                    due.append((entry[0], key, entry[1]))
            due.sort()
            out.extend((key, partition) for _d, key, partition in due)
            if not whole:
                break
        return out

    def pop_all(self) -> list[tuple[bytes, int]]:
        """(key, partition) of every key (a drain), all removed."""
        out = [(k, p) for k, (_d, p) in self.index.items()]
        self.clear()
        return out

    def clear(self) -> None:
        self.index = {}
        self._buckets = {}
        self._starts = []
        self._started = set()

    def stats(self) -> dict[str, int]:
        return {"keys": len(self.index), "buckets": len(self._buckets)}
