"""The demo feed: deterministic, seamless as time passes, in range, and shaped like real servers."""

from __future__ import annotations

import numpy as np
import pytest

from forecasting.clock import DAY
from forecasting.sources.base import SeriesRequest
from forecasting.sources.demo import PROFILES, DemoSource, demo_instance_id

P = 300
ANCHOR = 1_760_000_000 // P * P  # a Thursday morning, UTC


def fetch_all(source: DemoSource, start: int, end: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """Every metric of every instance from ``start`` to ``end``, as {(instance, metric): (ts, values)}."""
    requests = [SeriesRequest(i.instance_id, m, start) for i in source.list_instances() for m in source.metrics_of(i.instance_id)]
    out: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for iid, metric, ts, value in source.fetch(requests, end).rows:
        series = out.setdefault((iid, metric), ([], []))
        series[0].append(ts)
        series[1].append(value)
    return {k: (np.asarray(t), np.asarray(v)) for k, (t, v) in out.items()}


def test_six_instances_with_stable_ids_names_and_metrics() -> None:
    source = DemoSource(6, seed=42, anchor=ANCHOR)
    infos = source.list_instances()
    assert [i.instance_id for i in infos] == [demo_instance_id(k) for k in range(6)]
    assert all(len(i.instance_id) == 19 and i.instance_id.startswith("i-0") for i in infos)  # EC2-shaped: i- and 17 hex digits
    assert [i.name for i in infos] == [f"{p.name}-1" for p in PROFILES]
    assert [i.name for i in DemoSource(8).list_instances()][6:] == ["web-2", "api-2"]
    cache = infos[[p.name for p in PROFILES].index("cache")].instance_id
    assert source.metrics_of(cache) == ["cpu", "network_in", "network_out"]  # the cache has no memory agent
    others = [i.instance_id for i in infos if i.instance_id != cache]
    assert all(sorted(source.metrics_of(iid)) == ["cpu", "memory", "network_in", "network_out"] for iid in others)
    rows = source.fetch([SeriesRequest(cache, "memory", ANCHOR)], ANCHOR + DAY).rows
    assert rows == []  # asking for it gives nothing rather than invented data


def test_the_same_window_twice_gives_identical_values_and_seeds_differ() -> None:
    start, end = ANCHOR - DAY, ANCHOR + DAY
    first = fetch_all(DemoSource(6, seed=42, anchor=ANCHOR), start, end)
    second = fetch_all(DemoSource(6, seed=42, anchor=ANCHOR), start, end)
    assert first.keys() == second.keys() and len(first) == 6 * 4 - 1
    for key in first:
        assert np.array_equal(first[key][0], second[key][0]) and np.array_equal(first[key][1], second[key][1])
    other = fetch_all(DemoSource(6, seed=7, anchor=ANCHOR), start, end)
    assert not np.array_equal(first[(demo_instance_id(0), "cpu")][1], other[(demo_instance_id(0), "cpu")][1])


def test_fetching_by_id_gives_the_values_of_that_index() -> None:
    source = DemoSource(6, seed=42, anchor=ANCHOR)
    ts = np.arange(ANCHOR, ANCHOR + 6 * 3600, P, dtype=np.int64)
    for index in range(6):
        iid = demo_instance_id(index)
        for metric in source.metrics_of(iid):
            rows = source.fetch([SeriesRequest(iid, metric, ANCHOR)], int(ts[-1]) + P).rows
            assert np.array_equal([r[3] for r in rows], source.values(index, metric, ts))


def test_incremental_fetches_continue_seamlessly() -> None:
    source = DemoSource(6, seed=42, anchor=ANCHOR)
    iid = demo_instance_id(1)
    whole = source.fetch([SeriesRequest(iid, "cpu", ANCHOR)], ANCHOR + 3 * 3600).rows
    pieces, start = [], ANCHOR
    for end in (ANCHOR + 1234, ANCHOR + 3600, ANCHOR + 3600 + P, ANCHOR + 3 * 3600):
        pieces += source.fetch([SeriesRequest(iid, "cpu", start)], end).rows
        start = end
    assert pieces == whole
    assert [r[2] for r in whole] == list(range(ANCHOR, ANCHOR + 3 * 3600, P))  # [start, end), on the period grid
    late = source.fetch([SeriesRequest(iid, "cpu", ANCHOR + 100)], ANCHOR + 900).rows
    assert [r[2] for r in late] == [ANCHOR + 300, ANCHOR + 600]  # a start inside a bucket rounds up
    overlap = source.fetch([SeriesRequest(iid, "cpu", ANCHOR + 3600 - 900)], ANCHOR + 3600 + 2 * P).rows
    assert overlap[:3] == whole[9:12]  # re-reading the last 15 minutes gives the same numbers


def test_values_stay_in_range_over_two_weeks() -> None:
    data = fetch_all(DemoSource(6, seed=42, anchor=ANCHOR), ANCHOR - 14 * DAY, ANCHOR + DAY)
    for (_, metric), (ts, values) in data.items():
        assert len(ts) == 15 * DAY // P and np.all(np.isfinite(values))
        if metric in ("cpu", "memory"):
            assert values.min() >= 0 and values.max() <= 100
        else:
            assert values.min() > 0  # bytes per period
    cpu_means = sorted(data[(demo_instance_id(k), "cpu")][1].mean() for k in range(6))
    assert cpu_means[-1] - cpu_means[0] > 15  # the instances differ


@pytest.mark.parametrize("offset_hours", range(0, 24, 3))
def test_the_batch_instance_crosses_80_about_an_hour_after_the_anchor(offset_hours: int) -> None:
    anchor = ANCHOR + offset_hours * 3600 + 5 * DAY  # any time of day, weekdays and the weekend
    source = DemoSource(6, seed=42, anchor=anchor)
    batch = next(i.instance_id for i in source.list_instances() if i.name == "batch-1")
    for day in (0, 1):  # and again the next day, at the same time
        start = anchor + day * DAY
        rows = source.fetch([SeriesRequest(batch, "cpu", start - 3600)], start + 4 * 3600).rows
        ts, cpu = np.array([r[2] for r in rows]), np.array([r[3] for r in rows])
        before = cpu[ts < start + 5 * 60]
        assert before.max() < 60  # an ordinary load until the job starts
        over = ts[cpu >= 80]
        assert len(over) >= 6, "overload should last a while"
        first = (over[0] - start) / 60
        assert 40 <= first <= 75, first
        assert cpu[ts >= start + 3 * 3600].max() < 60  # and it is over a few hours later


def test_the_daily_and_weekly_cycles_are_visible() -> None:
    start = ANCHOR // DAY * DAY - 28 * DAY
    source = DemoSource(6, seed=42, anchor=start)
    ts = np.arange(start, start + 28 * DAY, P, dtype=np.int64)
    web = source.values(0, "cpu", ts)
    by_hour = np.array([web[(ts % DAY) // 3600 == h].mean() for h in range(24)])
    assert by_hour.max() - by_hour.min() > 25  # a clear daily swing
    lag_day = np.corrcoef(web[:-288], web[288:])[0, 1]
    lag_half_day = np.corrcoef(web[:-144], web[144:])[0, 1]
    assert lag_day > 0.8 and lag_half_day < 0
    weekday = ((ts // DAY) + 4) % 7
    assert web[weekday >= 5].mean() < 0.85 * web[weekday < 5].mean()  # quieter weekends
    db = source.values(3, "cpu", ts)
    assert db[-288:].mean() - db[:288].mean() > 10  # the database drifts up
    worker = source.values(5, "cpu", ts)
    assert np.mean(np.diff(worker) > 30) > 0.005  # bursts
