"""``python -m forecasting import FILE``: a real CLI run against a real SQLite file, all of the file or none of it."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from forecasting.sources.demo import demo_instance_id
from forecasting.sources.export import to_json_export
from forecasting.store import Store
from tests.fixtures.stores import demo_parsed, environ_without_settings

ROOT = Path(__file__).resolve().parents[1]
START = 1_760_000_000 // 300 * 300


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    """The CLI's environment: a database in tmp_path, no headroom.toml, no HEADROOM_* from outside."""
    out = environ_without_settings()
    out.update(
        HEADROOM_DB=str(tmp_path / "db" / "headroom.db"), HEADROOM_CONFIG=str(tmp_path / "none.toml"), PYTHONPATH=str(ROOT)
    )
    return out


def run_import(file: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "forecasting", "import", str(file), *extra],
        cwd=file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def samples(db: Path) -> list[tuple[str, str, int, float]]:
    """Every stored sample, read with plain sqlite3 (the connection closed again, leaving no -wal behind)."""
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT instance_id, metric, ts, value FROM samples ORDER BY 1, 2, 3").fetchall()


def snapshot(db: Path) -> dict[str, bytes]:
    """Every file of the database folder, byte for byte (the main file, and any -wal / -shm)."""
    return {p.name: p.read_bytes() for p in sorted(db.parent.iterdir())}


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# ---- valid files -------------------------------------------------------------------
def test_a_valid_export_round_trips_exactly_into_samples(tmp_path: Path, env: dict[str, str]) -> None:
    parsed = demo_parsed((0, 2, 4))
    done = run_import(write(tmp_path / "fleet.json", to_json_export(parsed)), env)
    assert done.returncode == 0, done.stderr
    db = Path(env["HEADROOM_DB"])
    assert samples(db) == sorted(parsed.rows())
    assert f"imported {parsed.points()} datapoints in 11 series" in done.stdout
    with closing(sqlite3.connect(db)) as conn:
        instances = conn.execute("SELECT instance_id, threshold, first_seen <= last_seen FROM instances ORDER BY 1").fetchall()
    assert instances == [(demo_instance_id(i), 80.0, 1) for i in (0, 2, 4)]
    again = run_import(tmp_path / "fleet.json", env)
    assert again.returncode == 0 and samples(db) == sorted(parsed.rows())  # idempotent


def test_pages_concatenated_or_in_a_list(tmp_path: Path, env: dict[str, str]) -> None:
    parsed = demo_parsed((1, 3), hours=4)
    results = json.loads(to_json_export(parsed))["MetricDataResults"]
    pages = [{"MetricDataResults": results[:3], "NextToken": "t1"}, {"MetricDataResults": results[3:]}]
    concatenated = write(tmp_path / "pages.json", json.dumps(pages[0], indent=2) + "\n" + json.dumps(pages[1], indent=2))
    assert run_import(concatenated, env).returncode == 0
    db = Path(env["HEADROOM_DB"])
    assert samples(db) == sorted(parsed.rows())
    db.unlink()
    as_list = write(tmp_path / "list.json", json.dumps(pages))
    assert run_import(as_list, env).returncode == 0
    assert samples(db) == sorted(parsed.rows())


def test_a_csv_goes_to_the_instance_named_on_the_command_line(tmp_path: Path, env: dict[str, str]) -> None:
    parsed = demo_parsed((5,), hours=2)
    (cpu_ts, cpu), (_, mem) = parsed.series[demo_instance_id(5)]["cpu"], parsed.series[demo_instance_id(5)]["memory"]
    lines = ["timestamp,cpu,memory"] + [
        f"{int(t)},{c!r},{m!r}" for t, c, m in zip(cpu_ts, cpu.tolist(), mem.tolist(), strict=True)
    ]
    done = run_import(write(tmp_path / "web.csv", "\n".join(lines) + "\n"), env, "--instance", "i-0feed00000001")
    assert done.returncode == 0, done.stderr
    expected = [
        ("i-0feed00000001", m, int(t), float(v))
        for m in ("cpu", "memory")
        for t, v in zip(cpu_ts, parsed.series[demo_instance_id(5)][m][1], strict=True)
    ]
    assert samples(Path(env["HEADROOM_DB"])) == sorted(expected)


# ---- bad files: exit 2, one line, the database untouched ---------------------------
GOOD_RESULT = {
    "Id": "cpu",
    "Label": "CPUUtilization",
    "Timestamps": ["2025-10-09T08:55:00Z", "2025-10-09T09:00:00Z"],
    "Values": [10.0, 11.0],
}
BAD_FILES: dict[str, tuple[str, bytes, str]] = {
    "not JSON": ("broken.json", b'{"MetricDataResults": [{"Id": "cpu",', "broken.json: not valid JSON"),
    "wrong shape": ("shape.json", json.dumps({"Datapoints": []}).encode(), "shape.json: page 1 has no MetricDataResults"),
    "lengths differ": (
        "len.json",
        json.dumps({"MetricDataResults": [{**GOOD_RESULT, "Values": [1.0]}]}).encode(),
        "MetricDataResults[0] (cpu): 2 timestamps but 1 values",
    ),
    "non-numeric": (
        "text.json",
        json.dumps({"MetricDataResults": [{**GOOD_RESULT, "Values": [1.0, "busy"]}]}).encode(),
        "point 1: value 'busy' is not a number",
    ),
    "NaN": (
        "nan.json",
        json.dumps({"MetricDataResults": [{**GOOD_RESULT, "Values": [1.0, float("nan")]}]}).encode(),
        "point 1: value 'nan' is not a finite number",
    ),
    "no CPU": (
        "mem.json",
        json.dumps({"MetricDataResults": [{**GOOD_RESULT, "Id": "mem", "Label": "mem_used_percent"}]}).encode(),
        "mem.json: no CPU series found",
    ),
    "unknown metric": (
        "disk.json",
        json.dumps({"MetricDataResults": [GOOD_RESULT, {**GOOD_RESULT, "Id": "d1", "Label": "DiskReadOps"}]}).encode(),
        "MetricDataResults[1] (d1): cannot tell which metric",
    ),
    "empty": ("empty.json", b"", "empty.json: the file is empty"),
    "not UTF-8": (
        "latin1.csv",
        "timestamp,cpu\n2025-10-09T08:55:00Z,5\n# café\n".encode("latin-1"),
        "latin1.csv: not UTF-8 text (byte 42)",
    ),
    "bad CSV row": (
        "rows.csv",
        b"timestamp,cpu\n1760000000,5\n1760000300,5,6\n",
        "rows.csv: line 3 has 3 fields, the header has 2",
    ),
    "a sample in the future": (
        "future.json",
        json.dumps({"MetricDataResults": [{**GOOD_RESULT, "Timestamps": [START, int(time.time()) + 86_400]}]}).encode(),
        "future.json: samples up to 20",
    ),
    "CPU of 1000 %": (
        "hot.json",
        json.dumps({"MetricDataResults": [{**GOOD_RESULT, "Values": [1000.0, 10.0]}]}).encode(),
        "cpu value 1000 is outside 0-100 %",
    ),
    "CPU of 1e308": ("huge.csv", b"timestamp,cpu\n1760000000,1e308\n", "cpu value 1e+308 is outside 0-100 %"),
    "negative CPU": ("neg.csv", b"timestamp,cpu\n1760000000,-1000000\n", "cpu value -1e+06 is outside 0-100 %"),
    "--output text": (
        "text.txt",
        b"METRICDATARESULTS\tcpu\tCPUUtilization\tComplete\nTIMESTAMPS\t2025-10-09T08:55:00+00:00\nVALUES\t10.0\n",
        "this is `aws cloudwatch get-metric-data --output text`; export with `--output json`",
    ),
    "--output table": (
        "table.txt",
        b"-----------------------\n|    GetMetricData    |\n+---------------------+\n||  MetricDataResults ||\n",
        "--output table`; export with `--output json`",
    ),
    "an unsafe instance column": (
        "ids.csv",
        b"timestamp,instance_id,cpu\n1760000000,../../etc,5\n",
        "line 2: invalid instance id '../../etc'",
    ),
}


@pytest.fixture()
def populated(env: dict[str, str]) -> Path:
    """A database that already holds data, closed again (so its files are at rest)."""
    parsed = demo_parsed((0,), hours=2)
    with Store(env["HEADROOM_DB"]) as store:
        store.samples.upsert_instance(demo_instance_id(0), "web-1", 80, START)
        store.samples.upsert(parsed.rows())
    return Path(env["HEADROOM_DB"])


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_input_exits_2_with_one_line_and_leaves_the_database_as_it_was(
    case: str, tmp_path: Path, env: dict[str, str], populated: Path
) -> None:
    name, content, expected = BAD_FILES[case]
    before_files, before_rows = snapshot(populated), samples(populated)
    assert before_rows and "headroom.db" in before_files
    done = run_import(write(tmp_path / name, content), env, "--instance", "i-0abc12345678")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("headroom import: ") and expected in lines[0], done.stderr
    assert snapshot(populated) == before_files and samples(populated) == before_rows


def test_a_200_mb_file_is_refused_before_it_is_read(tmp_path: Path, env: dict[str, str], populated: Path) -> None:
    big = tmp_path / "huge.json"
    subprocess.run(["truncate", "-s", "200M", str(big)], check=True)
    assert big.stat().st_size == 200 * 1024 * 1024 and big.stat().st_blocks * 512 < 1024 * 1024  # sparse
    before = snapshot(populated)
    done = run_import(big, env)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"headroom import: {big}: 209.7 MB is over the 100 MB limit"]
    assert snapshot(populated) == before
    smaller_limit = run_import(
        write(tmp_path / "small.json", json.dumps({"MetricDataResults": [GOOD_RESULT]})),
        {**env, "HEADROOM_IMPORT_LIMIT_MB": "0.0001"},
    )
    assert smaller_limit.returncode == 2 and "over the 0 MB limit" in smaller_limit.stderr


@pytest.mark.parametrize("hostile", ["../escape", "i-a/b", "i-1\nINFO forged log line", "x" * 10_000])
def test_an_unsafe_instance_argument_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str], hostile: str) -> None:
    done = run_import(write(tmp_path / "good.json", json.dumps({"MetricDataResults": [GOOD_RESULT]})), env, "--instance", hostile)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("headroom import: --instance: invalid instance id ")
    assert not Path(env["HEADROOM_DB"]).exists()


def test_a_folder_given_as_the_file_is_one_line_and_exit_2(tmp_path: Path, env: dict[str, str]) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    done = run_import(folder, env)
    assert done.returncode == 2 and done.stderr.splitlines() == [f"headroom import: {folder}: is a folder; give the export file"]


def test_a_missing_file_a_database_that_cannot_be_written_and_a_bad_setting(tmp_path: Path, env: dict[str, str]) -> None:
    missing = run_import(tmp_path / "nowhere.json", env)
    assert missing.returncode == 2 and missing.stderr.splitlines() == [
        f"headroom import: {tmp_path / 'nowhere.json'}: No such file or directory"
    ]
    assert not Path(env["HEADROOM_DB"]).exists()  # nothing created for a file that was never read
    good = write(tmp_path / "good.json", json.dumps({"MetricDataResults": [GOOD_RESULT]}))
    folder = tmp_path / "a-folder"
    folder.mkdir()
    blocked = run_import(good, {**env, "HEADROOM_DB": str(folder)})
    assert blocked.returncode == 1 and len(blocked.stderr.splitlines()) == 1 and f"cannot write to {folder}" in blocked.stderr
    bad = run_import(good, {**env, "HEADROOM_THRESHOLD": "abc"})
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "headroom: invalid setting HEADROOM_THRESHOLD: Input should be a valid number, unable to parse string as a number (got 'abc')"
    ]
