"""Settings from HEADROOM_* variables and headroom.toml: defaults, overrides, precedence, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from forecasting.models import MODEL_NAMES
from forecasting.settings import ModelParams, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("clean_env")  # no HEADROOM_* from outside; HEADROOM_CONFIG names a missing file


def test_defaults() -> None:
    s = load_settings()
    assert (s.source, s.region, s.instances, s.instance_tag, s.memory_metric) == ("demo", None, [], None, "cwagent")
    assert (s.demo_instances, s.demo_seed, s.threshold, s.thresholds) == (6, 42, 80.0, {})
    assert (s.db, s.period, s.history_days, s.train_days) == (Path("data/headroom.db"), 300, 30, 14)
    assert (s.horizon, s.models, s.backtest_days) == (12, ["naive", "seasonal_naive", "linear", "arima", "fleet", "combined"], 2)
    assert set(MODEL_NAMES) - set(s.models) == {"lstm", "tcn"}  # declared, off by default
    assert (s.ingest_every, s.retrain_every, s.digest_every, s.workers, s.dask_scheduler) == (5, 6, 24, 0, None)
    assert (s.alert_on, s.alert_margin, s.alert_cooldown) == ("likely", 5.0, 60)
    assert (s.smtp_host, s.smtp_port, s.smtp_tls, s.smtp_user, s.smtp_password, s.mail_from, s.mail_to) == (
        None,
        None,
        "starttls",
        None,
        None,
        "headroom@localhost",
        [],
    )
    assert (s.api_host, s.api_port, s.api_token) == ("127.0.0.1", 8000, None)
    assert not hasattr(s, "dashboard_port")  # the dashboard's port is make's (HEADROOM_DASHBOARD_PORT), not a setting
    assert (s.api_body_limit_mb, s.api_timeout, s.api_concurrency, s.import_limit_mb, s.api_open) == (20, 120, 2, 100, False)
    assert (s.job_timeout, s.retrain_timeout, s.aws_timeout, s.aws_max_attempts) == (15, 180, 10, 3)
    assert s.model == ModelParams() and (s.model.epochs, s.model.lookback, s.model.dilations) == (15, 48, [1, 2, 4, 8])
    assert s.models_dir == Path("data/models")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "HEADROOM_SOURCE": "cloudwatch",
        "HEADROOM_REGION": "eu-west-1",
        "HEADROOM_THRESHOLD": "72.5",
        "HEADROOM_DB": "/srv/headroom/h.db",
        "HEADROOM_PERIOD": "60",
        "HEADROOM_HISTORY_DAYS": "10",
        "HEADROOM_TRAIN_DAYS": "7",
        "HEADROOM_MODELS": "naive, linear",
        "HEADROOM_MAIL_TO": "ops@example.com,dev@example.com",
        "HEADROOM_SMTP_PASSWORD": "hunter2",
        "HEADROOM_MODEL__EPOCHS": "3",
        "HEADROOM_MODEL__DILATIONS": "[1, 2]",
        "HEADROOM_INSTANCE_TAG": "team=web",
        "HEADROOM_THRESHOLDS": '{"i-0abc12345": 65}',
        "HEADROOM_MEMORY_METRIC": "legacy",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert (s.source, s.region, s.threshold, s.db, s.period, s.history_days, s.train_days) == (
        "cloudwatch",
        "eu-west-1",
        72.5,
        Path("/srv/headroom/h.db"),
        60,
        10,
        7,
    )
    assert s.models == ["naive", "linear"] and s.mail_to == ["ops@example.com", "dev@example.com"]
    assert (s.model.epochs, s.model.dilations, s.model.units) == (3, [1, 2], 32)
    assert (s.instance_tag, s.memory_metric, s.thresholds) == ("team=web", "legacy", {"i-0abc12345": 65.0})
    assert s.smtp_password is not None and s.smtp_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())  # never logged by accident
    assert s.models_dir == Path("/srv/headroom/models")


@pytest.mark.parametrize(
    ("raw", "expected"), [("i-1,i-2", ["i-1", "i-2"]), (" i-1 , i-2 ,, ", ["i-1", "i-2"]), ("i-only", ["i-only"]), ("", [])]
)
def test_instances_is_a_comma_list(monkeypatch: pytest.MonkeyPatch, raw: str, expected: list[str]) -> None:
    monkeypatch.setenv("HEADROOM_INSTANCES", raw)
    assert load_settings().instances == expected


def test_stray_unprefixed_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"EPOCHS": "abc", "SEED": "x", "UNITS": "9", "THRESHOLD": "1", "DB": "/nope"}.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.model.epochs, s.model.seed, s.model.units, s.threshold, s.db) == (15, 7, 32, 80.0, Path("data/headroom.db"))


TOML = """
source = "cloudwatch"
threshold = 70
instances = ["i-0aaa11112222", "i-0bbb11112222"]
history_days = 20

[thresholds]
"i-0aaa11112222" = 90
"i-0ccc11112222" = 55.5

[model]
epochs = 4
units = 8
"""


def test_headroom_toml_with_thresholds_and_model_section(clean_env: Path) -> None:
    clean_env.write_text(TOML)
    s = load_settings()
    assert (s.source, s.threshold, s.history_days, s.instances) == ("cloudwatch", 70.0, 20, ["i-0aaa11112222", "i-0bbb11112222"])
    assert s.thresholds == {"i-0aaa11112222": 90.0, "i-0ccc11112222": 55.5}
    assert (s.model.epochs, s.model.units, s.model.lookback) == (4, 8, 48)
    assert (
        s.threshold_for("i-0aaa11112222") == 90.0 and s.threshold_for("i-0aaa11112222", tag_value=60) == 90.0
    )  # TOML beats the tag
    assert s.threshold_for("i-0bbb11112222", tag_value=60) == 60.0 and s.threshold_for("i-0bbb11112222") == 70.0


def test_environment_beats_toml_field_by_field(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.write_text(TOML)
    monkeypatch.setenv("HEADROOM_THRESHOLD", "85")
    monkeypatch.setenv("HEADROOM_SOURCE", "demo")
    monkeypatch.setenv("HEADROOM_MODEL__EPOCHS", "9")
    s = load_settings()
    assert (s.threshold, s.source, s.history_days) == (85.0, "demo", 20)
    assert (s.model.epochs, s.model.units) == (9, 8)  # the [model] section still gives the rest
    assert s.threshold_for("i-0ccc11112222") == 55.5 and s.threshold_for("i-0fff11112222") == 85.0
    assert load_settings(threshold=50).threshold == 50.0  # explicit arguments beat both


INVALID = [
    ({"HEADROOM_THRESHOLD": "abc"}, "invalid setting HEADROOM_THRESHOLD: Input should be a valid number", "'abc'"),
    ({"HEADROOM_THRESHOLD": "150"}, "invalid setting HEADROOM_THRESHOLD: Input should be less than or equal to 100", "'150'"),
    ({"HEADROOM_THRESHOLD": "0"}, "invalid setting HEADROOM_THRESHOLD: Input should be greater than 0", "'0'"),
    ({"HEADROOM_SOURCE": "aws"}, "invalid setting HEADROOM_SOURCE: Input should be 'demo' or 'cloudwatch'", "'aws'"),
    ({"HEADROOM_MODELS": "naive,foo"}, "invalid setting HEADROOM_MODELS: unknown model 'foo'; choose from naive", "foo"),
    ({"HEADROOM_MODELS": " , "}, "invalid setting HEADROOM_MODELS: at least one model is needed", ""),
    ({"HEADROOM_INSTANCE_TAG": "novalue"}, "invalid setting HEADROOM_INSTANCE_TAG: expected key=value", "'novalue'"),
    (
        {"HEADROOM_TRAIN_DAYS": "40"},
        "invalid setting HEADROOM_TRAIN_DAYS: the training window must not exceed the history kept (HEADROOM_HISTORY_DAYS=30)",
        "'40'",
    ),
    ({"HEADROOM_HISTORY_DAYS": "7"}, "invalid setting HEADROOM_TRAIN_DAYS: ", "14"),
    ({"HEADROOM_PERIOD": "5"}, "invalid setting HEADROOM_PERIOD: Input should be greater than or equal to 60", "'5'"),
    (
        {"HEADROOM_MODEL__EPOCHS": "0"},
        "invalid setting HEADROOM_MODEL__EPOCHS: Input should be greater than or equal to 1",
        "'0'",
    ),
    ({"HEADROOM_SMTP_PORT": "99999"}, "invalid setting HEADROOM_SMTP_PORT", "'99999'"),
    ({"HEADROOM_THRESHOLDS": "not json"}, "invalid setting HEADROOM_THRESHOLDS: error parsing value", ""),
    ({"HEADROOM_INGEST_EVERY": "inf"}, "invalid setting HEADROOM_INGEST_EVERY: Input should be a finite number", "'inf'"),
    ({"HEADROOM_RETRAIN_EVERY": "nan"}, "invalid setting HEADROOM_RETRAIN_EVERY: Input should be a finite number", "'nan'"),
    (
        {"HEADROOM_INGEST_EVERY": "100000"},
        "invalid setting HEADROOM_INGEST_EVERY: Input should be less than or equal to 1440",
        "",
    ),
    ({"HEADROOM_API_TIMEOUT": "1e9"}, "invalid setting HEADROOM_API_TIMEOUT: Input should be less than or equal to 3600", ""),
    ({"HEADROOM_AWS_TIMEOUT": "0"}, "invalid setting HEADROOM_AWS_TIMEOUT: Input should be greater than 0", ""),
    (
        {"HEADROOM_AWS_MAX_ATTEMPTS": "11"},
        "invalid setting HEADROOM_AWS_MAX_ATTEMPTS: Input should be less than or equal to 10",
        "",
    ),
    ({"HEADROOM_INSTANCES": "i-1,../x"}, "invalid setting HEADROOM_INSTANCES: invalid instance id '../x'", ""),
]


@pytest.mark.parametrize(
    ("env", "start", "shown"), INVALID, ids=[next(iter(e)) + "=" + next(iter(e.values())) for e, _, _ in INVALID]
)
def test_invalid_values_raise_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], start: str, shown: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(start) and shown in message


@pytest.mark.parametrize(
    ("content", "start"),
    [
        ("[thresholds\n", "invalid settings file HEADROOM_CONFIG="),
        ('threshold = "high"\n', "invalid setting HEADROOM_THRESHOLD: Input should be a valid number"),
        (
            '[thresholds]\n"i-0aaa11112222" = 150\n',
            "invalid setting HEADROOM_THRESHOLDS: threshold of i-0aaa11112222 must be above 0 and at most 100",
        ),
        ("[model]\nunits = -1\n", "invalid setting HEADROOM_MODEL__UNITS: Input should be greater than or equal to 1"),
        ("treshold = 50\n", "unknown setting 'treshold' in {path}; did you mean 'threshold'?"),
        ("[model]\nepoch = 3\n", "unknown setting 'model.epoch' in {path}; did you mean 'model.epochs'?"),
        ("colour = 'blue'\n", "unknown setting 'colour' in {path}"),
    ],
)
def test_a_bad_headroom_toml_is_one_line_too(clean_env: Path, content: str, start: str) -> None:
    clean_env.write_text(content)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message and message.startswith(start.format(path=clean_env))
    if "HEADROOM_CONFIG" in start:
        assert str(clean_env) in message and "line 1" in message


def test_settings_is_the_class_load_settings_returns() -> None:
    assert type(load_settings()) is Settings


@pytest.mark.parametrize(
    ("env", "toml", "line"),
    [
        (
            {"HEADROOM_THRESHOLD": "abc"},
            None,
            "headroom: invalid setting HEADROOM_THRESHOLD: Input should be a valid number, unable to parse string as a number (got 'abc')",
        ),
        (
            {"HEADROOM_SOURCE": "aws"},
            None,
            "headroom: invalid setting HEADROOM_SOURCE: Input should be 'demo' or 'cloudwatch' (got 'aws')",
        ),
        ({}, "source = demo\n", "headroom: invalid settings file HEADROOM_CONFIG="),
        (
            {"HEADROOM_INGEST_EVERY": "inf"},
            None,
            "headroom: invalid setting HEADROOM_INGEST_EVERY: Input should be a finite number",
        ),
        ({}, "treshold = 50\n", "headroom: unknown setting 'treshold' in "),
    ],
)
def test_the_worker_exits_2_with_that_one_line(tmp_path: Path, env: dict[str, str], toml: str | None, line: str) -> None:
    config = tmp_path / "bad.toml"
    if toml is not None:
        config.write_text(toml)
    full = {k: v for k, v in os.environ.items() if not k.startswith("HEADROOM_")}
    full.update(env, HEADROOM_CONFIG=str(config), HEADROOM_DB=str(tmp_path / "h.db"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "worker.py"), "--once"], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(line)
    assert not (tmp_path / "h.db").exists()  # nothing was started
