"""One settings object for every part of Headroom.

Values come from ``HEADROOM_*`` environment variables, then an optional
``headroom.toml`` (path from ``HEADROOM_CONFIG``, default ``./headroom.toml``),
then the defaults below. AWS credentials are never read here: boto3's own chain
finds them. An invalid value stops the program at start with one line naming the
variable (see :class:`SettingsError`).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from forecasting.ids import check_instance_id

CommaList = Annotated[list[str], NoDecode]


class SettingsError(ValueError):
    """A setting has an invalid value; the message is one line naming the variable."""


class ModelParams(BaseModel):
    """Hyperparameters of the neural models, in one place (``HEADROOM_MODEL__*`` or ``[model]`` in TOML).

    A plain model, not a settings class of its own: it is read only through ``Settings``, so
    stray unprefixed variables (``EPOCHS``, ``SEED``) in the environment never reach it.

    lookback: input window in steps; units: LSTM units / TCN filters; layers: stacked
    LSTM layers; dilations: TCN dilations; kernel_size: TCN kernel; epochs, batch_size,
    learning_rate: training; patience: early-stopping patience in epochs; max_windows:
    cap on training windows (the most recent are kept) to bound training time.
    """

    lookback: int = Field(48, ge=4, le=2016)
    units: int = Field(32, ge=1, le=512)
    layers: int = Field(1, ge=1, le=4)
    dilations: list[int] = Field(default_factory=lambda: [1, 2, 4, 8])
    kernel_size: int = Field(3, ge=2, le=8)
    epochs: int = Field(15, ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=4096)
    learning_rate: float = Field(0.005, gt=0, le=1)
    patience: int = Field(3, ge=1, le=100)
    max_windows: int = Field(2000, ge=16)
    seed: int = 7


class Settings(BaseSettings):
    """Everything configurable in Headroom; see docs/settings.md."""

    model_config = SettingsConfigDict(
        env_prefix="HEADROOM_",
        env_nested_delimiter="__",
        extra="ignore",  # the environment holds other programs' HEADROOM_* too; headroom.toml is checked by StrictToml
        validate_default=True,
        allow_inf_nan=False,  # HEADROOM_INGEST_EVERY=inf is a mistake, not a cadence
    )

    # where data comes from
    source: Literal["demo", "cloudwatch"] = "demo"
    region: str | None = None
    instances: CommaList = Field(default_factory=list)
    instance_tag: str | None = None  # "key=value" filter for discovery
    memory_metric: Literal["cwagent", "legacy"] = "cwagent"
    metrics: CommaList = Field(default_factory=lambda: _default_metrics())  # keys declared in forecasting.metrics
    demo_instances: int = Field(6, ge=1, le=2000)
    demo_seed: int = 42

    # thresholds
    threshold: float = Field(80.0, gt=0, le=100)
    thresholds: dict[str, float] = Field(default_factory=dict)  # per instance, TOML [thresholds]

    # store and windows
    db: Path = Path("data/headroom.db")
    period: int = Field(300, ge=60, le=3600)
    history_days: float = Field(30, gt=0, le=455)
    train_days: float = Field(14, gt=0, le=455)

    # forecasting
    horizon: int = Field(12, ge=1, le=288)
    models: CommaList = Field(default_factory=lambda: _default_models())
    backtest_days: float = Field(2, gt=0, le=30)
    model: ModelParams = Field(default_factory=ModelParams)
    fleet_model: Path | None = None  # the fleet model this cycle trained; set by the retrain job, not by users

    # worker cadences
    ingest_every: float = Field(5, gt=0, le=1440, description="minutes")
    retrain_every: float = Field(6, gt=0, le=720, description="hours")
    digest_every: float = Field(24, gt=0, le=744, description="hours")
    job_timeout: float = Field(15, gt=0, le=1440, description="minutes an ingest, forecast or digest job may run")
    retrain_timeout: float = Field(180, gt=0, le=2880, description="minutes a retrain job may run")
    aws_timeout: float = Field(10, gt=0, le=300, description="seconds to connect to, and to wait for, AWS")
    aws_max_attempts: int = Field(3, ge=1, le=10, description="tries per AWS call (the first included)")
    workers: int = Field(0, ge=0, le=256, description="retrain processes; 0 = one per core")
    dask_scheduler: str | None = None

    # alerts and mail
    alert_on: Literal["mean", "likely", "upper"] = "likely"
    alert_margin: float = Field(5.0, ge=0, le=50)
    alert_cooldown: float = Field(60, ge=0, le=10080, description="minutes")
    smtp_host: str | None = None
    smtp_port: int | None = Field(None, ge=1, le=65535)
    smtp_tls: Literal["ssl", "starttls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "headroom@localhost"
    mail_to: CommaList = Field(default_factory=list)

    # acting on warnings (docs/alerts.md, "Acting on warnings"): CloudWatch metrics, webhooks, Slack, PagerDuty
    cloudwatch_publish: bool = False
    cloudwatch_namespace: str = Field("Headroom", min_length=1, max_length=255)
    webhook_url: SecretStr | None = None  # generic JSON POST; a URL may carry a token, so it is never logged whole
    webhook_secret: SecretStr | None = None  # HMAC-SHA256 of the body in X-Headroom-Signature-256
    slack_webhook_url: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    webhook_timeout: float = Field(5, gt=0, le=60, description="seconds per request")
    webhook_attempts: int = Field(3, ge=1, le=10, description="tries per message per cycle")
    webhook_deadline: float = Field(20, gt=0, le=300, description="seconds per destination per cycle")
    webhook_min_change: float = Field(15, ge=0, description="minutes the predicted crossing must move to be sent again")

    # dashboard and API
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_token: SecretStr | None = None
    api_open: bool = False  # serve without a token on a non-loopback address, on purpose
    api_body_limit_mb: float = Field(20, gt=0, le=1024)
    api_timeout: float = Field(120, gt=0, le=3600)
    api_concurrency: int = Field(2, ge=1, le=64)
    import_limit_mb: float = Field(100, gt=0, le=4096)

    @field_validator("instances", "mail_to", "models", "metrics", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_url", "slack_webhook_url", "pagerduty_url")
    @classmethod
    def _http_url(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is not None and not re.match(r"https?://[^/\s]+", str(raw)):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        from forecasting.models import model_names

        unknown = [name for name in value if name not in model_names()]
        if unknown:
            raise ValueError(f"unknown model {unknown[0]!r}; choose from {', '.join(model_names())}")
        if not value:
            raise ValueError("at least one model is needed")
        return value

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: list[str]) -> list[str]:
        from forecasting.metrics import METRICS

        unknown = [key for key in value if key not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
        missing = [key for key, metric in METRICS.items() if metric.required and key not in value]
        if missing:
            raise ValueError(f"{missing[0]} is required (it is what Headroom forecasts)")
        return [key for key in METRICS if key in value]  # declaration order, each once

    @field_validator("instances")
    @classmethod
    def _safe_ids(cls, value: list[str]) -> list[str]:
        for instance_id in value:
            check_instance_id(instance_id)
        return value

    @field_validator("instance_tag")
    @classmethod
    def _tag_filter(cls, value: str | None) -> str | None:
        if value is not None and "=" not in value:
            raise ValueError("expected key=value, e.g. team=web")
        return value

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for instance_id, threshold in value.items():
            check_instance_id(instance_id)
            if not 0 < threshold <= 100:
                raise ValueError(f"threshold of {instance_id} must be above 0 and at most 100")
        return value

    @field_validator("train_days")
    @classmethod
    def _windows_fit(cls, value: float, info: ValidationInfo) -> float:
        history = info.data.get("history_days")  # declared before train_days, so already validated
        if history is not None and value > history:
            raise ValueError(f"the training window must not exceed the history kept (HEADROOM_HISTORY_DAYS={history:g})")
        return value

    def threshold_for(self, instance_id: str, tag_value: float | None = None) -> float:
        """The CPU threshold of one instance: TOML override, then EC2 tag, then the global one."""
        if instance_id in self.thresholds:
            return self.thresholds[instance_id]
        if tag_value is not None:
            return tag_value
        return self.threshold

    @property
    def models_dir(self) -> Path:
        """Model files live beside the database."""
        return self.db.parent / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, StrictToml(settings_cls, toml_file=config_path()))


class StrictToml(TomlConfigSettingsSource):
    """``headroom.toml``, refusing keys Settings does not have: a typo (``treshold``) must not be ignored silently."""

    def __call__(self) -> dict[str, object]:
        check_toml_keys(self.toml_data, config_path())
        return super().__call__()


def check_toml_keys(data: dict[str, object], path: Path) -> None:
    """SettingsError naming the first unknown key and the nearest valid one ([model] keys included)."""
    sections: list[tuple[str, dict[str, object], list[str]]] = [("", data, list(Settings.model_fields))]
    if isinstance(data.get("model"), dict):
        sections.append(("model.", data["model"], list(ModelParams.model_fields)))  # type: ignore[arg-type]
    for prefix, table, valid in sections:
        for key in table:
            if key not in valid:
                near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
                hint = f"; did you mean {prefix + near[0]!r}?" if near else ""
                raise SettingsError(f"unknown setting {prefix + key!r} in {path}{hint}")


def _default_metrics() -> list[str]:
    from forecasting.metrics import default_metrics

    return default_metrics()


def _default_models() -> list[str]:
    from forecasting.models import default_models

    return default_models()


def config_path() -> Path:
    """Where the optional TOML file is read from (``HEADROOM_CONFIG``, default ``./headroom.toml``)."""
    return Path(os.environ.get("HEADROOM_CONFIG", "headroom.toml"))


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    variable = "HEADROOM_" + "__".join(loc).upper() if loc else "HEADROOM settings"
    given = first.get("input")
    secret = bool(loc) and "SecretStr" in str(Settings.model_fields.get(loc[0]) and Settings.model_fields[loc[0]].annotation)
    shown = "" if isinstance(given, dict) or given is None or secret else f" (got {str(given)[:60]!r})"
    message = first["msg"].removeprefix("Value error, ")
    return f"invalid setting {variable}: {message}{shown}"


def load_settings(**overrides: object) -> Settings:
    """Read and validate settings; raise SettingsError with one clear line on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # each value is validated by pydantic here
    except SettingsError:
        raise
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"invalid settings file HEADROOM_CONFIG={config_path()}: {_first_line(error)}") from None
    except Exception as error:  # e.g. an env value that should be JSON (HEADROOM_THRESHOLDS) and is not
        field = re.search(r'field "(\w+)"', str(error))
        variable = f"HEADROOM_{field.group(1).upper()}" if field else "HEADROOM settings"
        raise SettingsError(f"invalid setting {variable}: {_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings for long-running processes (dashboard, API), read once."""
    return load_settings()
