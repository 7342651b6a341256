"""The collector policy (collector.py): bulk work is frozen out of later collections, and the
cycles that freezing keeps are collected when the heap is thawed."""

from __future__ import annotations

import gc
import weakref

import pytest

from xds_operator import collector
from xds_operator.collector import FREEZE_AFTER, collect_frozen, collector_paused
from xds_operator.xds.callbacks import NoCallbacks, StreamInfo
from xds_operator.xds.delta import DeltaStream
from xds_operator.xds.sotw import SotwStream


class Node:
    other: object = None


@pytest.fixture(autouse=True)
def thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_pause_that_leaves_many_objects_freezes_the_heap_and_a_small_one_does_not() -> None:
    with collector_paused(freeze=True):
        few = [[i] for i in range(100)]
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    with collector_paused(freeze=True):
        many = [[i] for i in range(FREEZE_AFTER + 1000)]
    assert gc.get_freeze_count() >= len(many) and gc.isenabled()
    assert len(few) == 100


def test_without_freeze_asked_a_pause_freezes_nothing() -> None:
    with collector_paused():
        many = [[i] for i in range(FREEZE_AFTER + 1000)]
    assert gc.get_freeze_count() == 0 and len(many)


def test_overlapping_pauses_freeze_once_the_last_ends() -> None:
    with collector_paused():
        with collector_paused(freeze=True):
            many = [[i] for i in range(FREEZE_AFTER + 1000)]
        assert gc.get_freeze_count() == 0 and not gc.isenabled()
    assert gc.get_freeze_count() >= len(many) and gc.isenabled()


def test_a_cycle_through_a_frozen_object_waits_for_collect_frozen() -> None:
    opened = Node()  # e.g. a stream open when a build froze the heap
    with collector_paused(freeze=True):
        built = [[i] for i in range(FREEZE_AFTER + 1000)]
    closed = Node()
    opened.other, closed.other = closed, opened  # the stream closes: a garbage cycle
    gone = weakref.ref(opened)
    del opened, closed
    gc.collect()
    assert gone() is not None  # frozen: not examined
    collect_frozen()
    assert gone() is None
    assert gc.get_freeze_count() >= len(built)  # what survived is frozen again


def frozen_cycle() -> tuple[list[list[int]], weakref.ref[Node]]:
    """A bulk pause that freezes an object alive then, which then becomes part of a garbage
    cycle: what the bulk work left, and a reference to the cycle."""
    opened = Node()
    with collector_paused(freeze=True):
        built = [[i] for i in range(FREEZE_AFTER + 1000)]
    opened.other = Node()
    opened.other.other = opened
    return built, weakref.ref(opened)


def test_a_bulk_pause_long_after_the_last_thaw_collects_the_frozen_heap(monkeypatch) -> None:
    first, gone = frozen_cycle()
    with collector_paused(freeze=True):  # soon after: frozen again, nothing examined
        second = [[i] for i in range(FREEZE_AFTER + 1000)]
    assert gone() is not None
    monkeypatch.setattr(collector, "THAW_AFTER", 0.0)
    with collector_paused(freeze=True):
        third = [[i] for i in range(FREEZE_AFTER + 1000)]
    assert gone() is None
    assert gc.get_freeze_count() >= len(first) + len(second) + len(third)


@pytest.mark.parametrize("stream_class", [SotwStream, DeltaStream])
def test_a_closed_streams_state_machine_is_freed_without_the_collector(stream_class) -> None:
    """A stream open at a freeze is frozen; if it were a cycle, it would wait for a thaw once closed."""
    gc.disable()
    try:
        stream = stream_class(StreamInfo(1, "envoy", "g", stream_class.protocol), NoCallbacks(), lambda: None)
        gone = weakref.ref(stream)
        del stream
        assert gone() is None
    finally:
        gc.enable()


def test_a_thaw_asked_for_during_a_pause_waits_for_its_end() -> None:
    first, gone = frozen_cycle()
    with collector_paused():  # e.g. a build in another thread while the loop asks for a thaw
        collect_frozen()
        assert gone() is not None and not gc.isenabled()
    assert gone() is None and gc.isenabled()
    assert gc.get_freeze_count() >= len(first)
