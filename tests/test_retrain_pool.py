"""Fleet retraining: the spawn process pool and a Dask LocalCluster give the same champions; failures stay local."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from forecasting.ids import folder_name
from forecasting.ingest import run_ingest
from forecasting.retrain_pool import due_instances, make_executor, retrain_due
from forecasting.settings import Settings, load_settings
from forecasting.store import Store

P = 300
NOW = 1_800_000_000 // P * P
FAST = ["naive", "seasonal_naive", "linear"]


def fleet_store(folder: Path, instances: int = 4, **overrides: object) -> tuple[Settings, Store]:
    """A store filled by the ingest job from the demo feed: ``instances`` instances, 2 days each."""
    base: dict[str, object] = {
        "db": folder / "headroom.db",
        "demo_instances": instances,
        "train_days": 2,
        "history_days": 2,
        "backtest_days": 0.5,
        "models": FAST,
        "workers": 2,
    }
    settings = load_settings(**{**base, **overrides})
    store = Store(settings.db)
    store.jobs.set_meta("demo_anchor", str(NOW - 2 * 86_400))
    run_ingest(store, settings, NOW)
    return settings, store


def champions_and_scores(store: Store) -> dict[str, tuple[str | None, dict[str, float | None]]]:
    runs = store.runs.latest()
    return {iid: (run.champion, {s.model: s.mase for s in store.runs.scores(run_id=run.run_id)}) for iid, run in runs.items()}


@pytest.mark.slow
def test_dask_local_cluster_and_the_process_pool_choose_the_same_champions(tmp_path: Path, clean_env: Path) -> None:
    from distributed import LocalCluster

    local_settings, local = fleet_store(tmp_path / "pool", instances=5)
    report = retrain_due(local, local_settings, NOW)
    assert report.due == 5 and len(report.trained) == 5 and not report.failed, report.summary()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask_settings, remote = fleet_store(tmp_path / "dask", instances=5, dask_scheduler=cluster.scheduler_address)
        executor = make_executor(dask_settings)
        assert type(executor).__name__ == "_DaskExecutor"
        executor.shutdown()
        on_dask = retrain_due(remote, dask_settings, NOW)  # make_executor picks the cluster from the setting
        executed = [worker.state.executed_count for worker in cluster.workers.values()]
    assert len(on_dask.trained) == 5 and not on_dask.failed, on_dask.summary()
    assert len(executed) == 2 and sum(executed) == 5  # the five trainings ran on the cluster's workers
    pool, dask = champions_and_scores(local), champions_and_scores(remote)
    assert pool == dask and len(pool) == 5  # same champion and the same backtest MASE of every model, per instance
    assert all(champion in FAST for champion, _ in pool.values())
    assert all(len(mases) == 3 and all(m is not None for m in mases.values()) for _, mases in pool.values())
    for store in (local, remote):
        for run in store.runs.latest().values():
            assert Path(run.model_dir).is_dir()  # the model files were written by the workers, where the parent can read them
        store.close()


def test_a_failing_instance_is_logged_with_its_id_and_the_others_are_kept(
    tmp_path: Path, clean_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings, store = fleet_store(tmp_path, instances=3, workers=1)
    ids = [i.instance_id for i in store.samples.instances()]
    broken = ids[1]
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    (settings.models_dir / folder_name(broken)).write_text("a file where its model folder should go")
    with caplog.at_level(logging.ERROR, logger="headroom.fleet"):
        report = retrain_due(store, settings, NOW)
    assert sorted(report.trained) == sorted([ids[0], ids[2]]) and len(report.failed) == 1
    assert report.failed[0].startswith(f"{broken}: ") and "1 failed" in report.summary()
    assert any(r.getMessage().startswith(f"retrain {broken} failed: ") for r in caplog.records)
    assert set(store.runs.latest()) == {ids[0], ids[2]}
    assert due_instances(store, settings.retrain_every, NOW + 60) == [broken]  # it is tried again at the next turn
    store.close()


def test_due_means_never_trained_or_older_than_the_cadence(tmp_path: Path, clean_env: Path) -> None:
    settings, store = fleet_store(tmp_path, instances=3, retrain_every=6)
    ids = [i.instance_id for i in store.samples.instances()]
    run = {
        "instance_id": ids[0],
        "started_at": NOW - 7 * 3600,
        "finished_at": NOW - 7 * 3600,
        "train_start": None,
        "train_end": None,
        "points": 0,
        "champion": None,
        "model_dir": None,
    }
    store.runs.record(run, [], [])
    store.runs.record({**run, "instance_id": ids[1], "started_at": NOW - 3600}, [], [])
    assert due_instances(store, settings.retrain_every, NOW) == [ids[2], ids[0]]  # never trained first, then the oldest
    assert due_instances(store, settings.retrain_every, NOW + 5 * 3600) == [ids[2], ids[0], ids[1]]
    assert retrain_due(store, settings, NOW, stop=_set()).summary().endswith("stopped early")
    store.close()


def _set() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_a_stop_between_results_cancels_the_queued_instances(tmp_path: Path, clean_env: Path) -> None:
    settings, store = fleet_store(tmp_path, instances=5, workers=1)
    stop = threading.Event()
    record = store.runs.record

    def record_then_stop(*args: object) -> int:
        stop.set()  # as SIGTERM would, right after the first result
        return record(*args)  # type: ignore[arg-type]

    store.runs.record = record_then_stop  # type: ignore[method-assign]
    report = retrain_due(store, settings, NOW, stop=stop)
    assert report.stopped and 1 <= len(report.trained) < 5 and not report.failed
    assert len(store.runs.latest()) == len(report.trained)
    store.close()
