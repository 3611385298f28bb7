"""Refreshes that start together travel together."""

from __future__ import annotations

from workers.engine.scheduler import MAX_BATCH, SLOT, batches


def test_starts_within_a_slot_share_a_batch() -> None:
    """Starts less than a slot apart form one batch, sent at its latest start so none runs early."""
    claimed = [("a", 10.0, 100.0), ("b", 10.5, 100.1), ("c", 11.0, 100.0 + SLOT + 0.01), ("d", 9.0, 99.0)]
    found = batches(claimed, now=99.5)
    assert [items for _, items in found] == [[("d", 9.0)], [("a", 10.0), ("b", 10.5)], [("c", 11.0)]]
    assert [round(countdown, 6) for countdown, _ in found] == [0.0, 0.6, round(0.5 + SLOT + 0.01, 6)]


def test_batches_are_capped() -> None:
    """A crowd starting at once is split so no task carries more than MAX_BATCH refreshes."""
    claimed = [(f"i{i}", 1.0, 5.0) for i in range(MAX_BATCH * 2 + 1)]
    sizes = [len(items) for _, items in batches(claimed, now=5.0)]
    assert sizes == [MAX_BATCH, MAX_BATCH, 1]
