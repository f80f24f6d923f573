"""One frozen, typed configuration, loaded from YAML with environment overrides.

    settings = load_config("config/detector.yaml")     # raises ConfigError (one line) when bad
    settings.kafka.bootstrap_servers

Every key can be overridden by an environment variable named after its path, e.g.
``DETECTOR__KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``DETECTOR__MODEL__WINDOW=16``.
Environment beats the file; the file beats the defaults below.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from detector.exceptions import ConfigError

M = TypeVar("M", bound=BaseModel)

ENV_PREFIX = "DETECTOR__"


class _Section(BaseModel):
    """A config section. Every secret key `x` may instead be given as `x_file`: a path whose
    contents (trailing newline stripped) are the secret, as Docker and Kubernetes mount them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            key = f"{name}_file"
            if field.annotation != SecretStr | None or key not in data:
                continue
            data = dict(data)
            path = data.pop(key)
            if data.get(name) is not None:
                raise ValueError(f"{key}: {name} is set too; give one of them")
            if path is None:
                continue
            try:
                data[name] = Path(path).read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
            except UnicodeDecodeError:
                raise ValueError(f"{key}: {path} is not UTF-8 text") from None
        return data


class KafkaConfig(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    # kafka-python (pure Python, the default) or confluent (librdkafka: pip install 'detector[fast]').
    client: Literal["kafka-python", "confluent"] = "kafka-python"
    input_topic: str = "events"
    alerts_topic: str = "alerts"
    dead_letter_topic: str = "events.dlq"
    state_topic: str = "detector-state"
    # Analysts' verdicts on alerts (detector.core.feedback), keyed by stream id, with as many
    # partitions as the input topic: the instance that owns a stream also reads its verdicts.
    verdicts_topic: str = "alerts.verdicts"
    # Would-be alerts of the challenger (model.shadow_path): the alerts' schema, its model_version.
    shadow_alerts_topic: str = "alerts.shadow"
    group_id: str = "detector"
    # at_least_once: a crash re-scores the events since the last checkpoint and re-publishes their
    # alerts (same alert_id). exactly_once: each checkpoint is one Kafka transaction (the alerts,
    # dead letters and shadow alerts since the last one, the changed streams' state, the consumed
    # offsets with the group's metadata); input and changelog are read read_committed. A
    # read_committed reader of the alerts then sees each alert once, state.checkpoint_interval_seconds
    # later at most.
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # exactly_once: the transactional producer's id. Keep it stable across restarts of one instance
    # (a restart then aborts what the crashed process left open at once) and distinct between
    # instances (a StatefulSet's pod name). Default: detector-<group_id>-<host name>.
    transactional_id: str | None = None
    # exactly_once: a transaction left open by an instance that does not come back (its id gone) is
    # aborted by the broker after this long; read_committed readers of its partitions wait meanwhile.
    transaction_timeout_ms: int = Field(60_000, ge=1_000, le=900_000)
    create_topics: bool = True
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    # 2,000 records per poll: large enough to amortise the per-batch scorer call, small enough
    # that one batch scores in well under the 100 ms latency budget.
    max_poll_records: int = Field(2000, ge=1, le=100_000)
    # 100 ms: the loop wakes at least this often to check stop flags and checkpoint deadlines.
    poll_timeout_ms: int = Field(100, ge=1, le=10_000)
    # How long the group waits for a silent (crashed) member before moving its partitions.
    # 10 s: a crashed instance's streams resume elsewhere quickly; the client default is 45 s.
    session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("client")
    @classmethod
    def _client_installed(cls, v: str) -> str:
        if v == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
            raise ValueError("confluent-kafka is not installed: pip install 'detector[fast]' (or confluent-kafka)")
        return v


class NumericFeature(_Section):
    name: str
    transform: Literal["none", "log1p"] = "none"
    clip: tuple[float, float] | None = None
    # false: the field's own level is no feature (held constant, out of the profile); it only
    # feeds `relative_to_median`. For metrics whose level moves (a service that grows), where a
    # level learned on the first weeks would make every later reading an outlier.
    absolute: bool = True


class CategoricalFeature(_Section):
    """A text field hashed (crc32) into `buckets`. `embedding` 0: one 0/1 column per bucket.
    `embedding` d > 0: d dense columns, the bucket's row of an embedding table learned from the
    training streams (see detector.core.embedding), for fields with many values (merchant ids)."""

    name: str
    buckets: int = Field(..., ge=2, le=4096)
    embedding: int = Field(0, ge=0, le=64)

    @model_validator(mode="after")
    def _one_hot_is_small(self) -> CategoricalFeature:
        if self.embedding == 0 and self.buckets > 256:
            raise ValueError(f"buckets: {self.buckets} one-hot columns; at most 256 without an embedding")
        if self.embedding >= self.buckets:
            raise ValueError(f"embedding: {self.embedding} dimensions for {self.buckets} buckets; use fewer")
        return self


class FeaturesConfig(_Section):
    stream_field: str = "stream_id"
    event_id_field: str = "event_id"
    time_field: str = "ts"
    # The amount counts only against the card's own running median (absolute false): a model that
    # learned one currency's amounts flooded a world with amounts 20x larger (284 false alerts per
    # 10k on config/scenarios/shifted.yaml, against 9 in its own world), and its PR-AUC there fell.
    numeric: tuple[NumericFeature, ...] = (NumericFeature(name="amount", transform="log1p", absolute=False),)
    categorical: tuple[CategoricalFeature, ...] = (
        CategoricalFeature(name="channel", buckets=4),
        # Learned embeddings: `detector evaluate` on the default card scenario, validation seed,
        # two training seeds: PR-AUC 0.376 / 0.351 with one-hot blocks of 6 buckets, 0.445 / 0.453
        # with these (and 0.367 with one-hot blocks of 16: the gain is the embedding, not the buckets).
        CategoricalFeature(name="country", buckets=1024, embedding=4),
        CategoricalFeature(name="merchant_category", buckets=1024, embedding=4),
    )
    hour_of_day: bool = True
    day_of_week: bool = True
    log_seconds_since_previous: bool = True
    # Per stream: log(1 + decayed count of its previous events), this time constant; 0 = off.
    # One hour: card-testing and velocity bursts happen within minutes to an hour.
    recent_events_window_seconds: float = Field(3600.0, ge=0)
    # Per stream: log(1 + decayed count of its previous events) over a day (this time constant;
    # 0 = off). Off by default: on the default scenario (2,000 training cards, test seed 303) it
    # lowered PR-AUC 0.641 -> 0.600 and raised false alerts 1.14 -> 2.59 per 10k (shifted world:
    # 0.342 -> 0.330, 17 -> 28).
    day_events_window_seconds: float = Field(0.0, ge=0)
    # Per stream: each numeric field's z-score against the stream's own mean and variance, which
    # decay over about this many events (0 = off); a value past 4 sd moves them only as far as
    # 4 sd would, so one outlier does not hide the next. NaN (unknown) for a stream's first 3 events.
    stream_profile_events: float = Field(64.0, ge=0)
    # The numeric field whose ratio to the stream's running median is a feature (None: off).
    relative_to_median: str | None = "amount"
    # The running median moves 20% of the way to each value, the difference first clipped to this
    # many standard deviations of the field on the training data. Larger: it forgets a fault's
    # level sooner once the stream is back to normal; smaller: it lags a slow drift, which then
    # shows against it (and keeps showing after the drift ends).
    relative_to_median_step: float = Field(0.5, gt=0)
    # Per stream: 1 when this field's value is new for the stream, else 0 (a 64-bit set of value
    # hashes per field and stream: 8 bytes). A card's first foreign country, first unusual shop.
    # Measured with the profile part of the score: PR-AUC 0.612 -> 0.644 on the default scenario,
    # 0.323 -> 0.333 on the shifted world (bench/quality.py); 32 bytes per field and stream.
    novelty: tuple[str, ...] = ("merchant_id", "country", "merchant_category")
    label_fields: tuple[str, ...] = ("label", "fraud_type", "incident_id")

    @model_validator(mode="after")
    def _labels_are_not_features(self) -> FeaturesConfig:
        names = [f.name for f in self.numeric] + [f.name for f in self.categorical]
        leaked = sorted(set(names + list(self.novelty)) & set(self.label_fields))
        if leaked:
            raise ValueError(f"label fields cannot be features: {', '.join(leaked)}")
        if len(set(names)) != len(names):
            raise ValueError("a field is declared twice")
        if len(set(self.novelty)) != len(self.novelty):
            raise ValueError("a novelty field is declared twice")
        if self.relative_to_median is not None and self.relative_to_median not in names:
            raise ValueError(f"relative_to_median names '{self.relative_to_median}', not a numeric feature")
        return self


class ModelConfig(_Section):
    path: Path = Path("models/default")
    # A challenger scored in shadow on every event, with its own per-stream state (checkpointed
    # like the champion's); its would-be alerts go to kafka.shadow_alerts_topic. When model.path
    # later holds this version (`detector promote`), it takes over with that state: no cold start.
    shadow_path: Path | None = None
    # Check the model folders for a new version this often (0: only on SIGHUP).
    watch_seconds: float = Field(10.0, ge=0)
    window: int = Field(16, ge=1, le=256)
    units: int = Field(32, ge=4, le=1024)
    # Stacked LSTM layers: each adds a step per event and 2 x units floats of state per stream; the
    # decoder reads the top layer. 1 is the default the speed and memory targets are measured at.
    layers: int = Field(1, ge=1, le=4)
    epochs: int = Field(8, ge=1, le=1000)
    batch_size: int = Field(64, ge=1)
    chunk_length: int = Field(32, ge=2, le=1024)
    learning_rate: float = Field(3e-3, gt=0, lt=1)
    validation_split: float = Field(0.2, gt=0, lt=1)
    patience: int = Field(2, ge=1)
    seed: int = 7
    warmup_events: int = Field(3, ge=0)
    # Share of the score from the next-event prediction head (0: reconstruction only). Chosen by
    # `detector evaluate` on the simulator scenarios (cards, default: PR-AUC 0.446 at 0.5, 0.480 at
    # 0.8, 0.471 at 0.95; false alerts 2.7 -> 0.7 per 10k); stored in the model metadata.
    prediction_weight: float = Field(0.8, ge=0, le=1)
    # per_feature: divide each feature's squared error by its mean on normal held-out streams
    # (at most 10x), so normally predictable features (a card's country) weigh more. Catches more
    # incidents of the quiet kinds (impossible travel, dormant cards) at more false alerts; see
    # the README's quality table. none: every normalised feature counts the same.
    error_weighting: Literal["none", "per_feature"] = "none"
    # Score = the stream's evidence: its recent surprises added up, decaying with this time
    # constant (detector.core.evidence), so a burst of mildly odd events alerts where one would not.
    # 0: the score is each event's own error. Chosen with `detector evaluate` (cards, validation
    # seed: PR-AUC 0.445 -> 0.60 and incident recall 0.51 -> 0.73 at 1800 s; 900 s and 3600 s
    # within 0.01 of it).
    evidence_seconds: float = Field(1800.0, ge=0, le=30 * 86400)
    # Decay the evidence per event instead of per second: `evidence_seconds` is then a number of
    # events. For streams sampled at a fixed period (metrics), where the time between events says
    # nothing and a decay in seconds would tie the score's scale to the sampling interval.
    evidence_per_event: bool = False
    # Score = how unusual the stream's recent surprises (their mean over `evidence_seconds`
    # events) are against its own long run over about this many events (detector.core.likelihood),
    # instead of their decayed sum; 0 = off. For metric series whose behaviour moves beyond what
    # their first weeks showed. Needs evidence_per_event.
    likelihood_events: float = Field(0.0, ge=0)
    # How the parts of an event's surprise (sequence error, whitened prediction, profile) combine:
    # fisher (their p-values multiplied: several mildly odd parts add up) or tippett (the smallest
    # p-value times the number of parts: valid whatever their dependence).
    combine: Literal["fisher", "tippett"] = "fisher"
    # Training takes at least this many gradient steps (the data is passed over more often within
    # an epoch when it is small): 8 epochs of a single series of a few hundred events are some 40
    # steps, far from trained. 400 steps train the default model on one such series in seconds.
    min_steps: int = Field(400, ge=0, le=1_000_000)
    # 1 alert per 10,000 normal events by default (the target false-alarm rate).
    target_false_alarm_rate: float = Field(1e-4, gt=0, lt=0.5)
    threshold_method: Literal["pot", "quantile"] = "pot"
    critical_multiplier: float = Field(2.0, ge=1)

    @model_validator(mode="after")
    def _shadow_elsewhere(self) -> ModelConfig:
        if self.shadow_path is not None and Path(self.shadow_path).resolve() == Path(self.path).resolve():
            raise ValueError("shadow_path: the same folder as model.path; a challenger needs its own")
        return self

    @model_validator(mode="after")
    def _likelihood_counts_events(self) -> ModelConfig:
        if self.likelihood_events > 0 and not (self.evidence_per_event and self.evidence_seconds > 0):
            raise ValueError("likelihood_events: needs evidence_per_event true and evidence_seconds > 0")
        return self


class StateConfig(_Section):
    max_streams: int = Field(100_000, ge=1)
    idle_ttl_seconds: float = Field(7 * 24 * 3600, gt=0)
    # Checkpoint (state to the changelog, then offsets) this often: it bounds what a crash
    # re-scores; 5 s at 50k events/s is 250k events and ~1 s of rescoring.
    checkpoint_interval_seconds: float = Field(5.0, gt=0, le=3600)


class AlertsConfig(_Section):
    cooldown_seconds: float = Field(0.0, ge=0)
    # At most this many alerts per 10,000 scored events (off: null): the effective threshold rises
    # above the calibrated one when live traffic would exceed it, and never falls below it
    # (detector.core.budget). Analysts have a capacity; a threshold calibrated on last month does not.
    budget_per_10k: float | None = Field(None, gt=0, le=10_000)
    passthrough_fields: tuple[str, ...] = ("amount", "merchant_id", "country", "channel")


class FeedbackConfig(_Section):
    # After a `legit` verdict a stream's alerts are quiet for this long from the verdict (event
    # time), unless an event scores at the critical level. A day: an analyst who cleared a card
    # does not want the same pattern back within the hour; a new kind of fraud still pages.
    legit_quiet_seconds: float = Field(86_400.0, ge=0)
    # detector_alert_precision: fraud over fraud + legit among the last this many verdicts.
    precision_window: int = Field(200, ge=1, le=100_000)


class ConsoleConfig(_Section):
    """`detector console`: the analysts' triage page (detector.console)."""

    host: str = "127.0.0.1"
    port: int = Field(9200, ge=0, le=65535)
    # The console's own copy of the alerts (SQLite; SQL lives in detector/console/store.py only).
    db_path: Path = Path("data/console.sqlite")
    # Who may log in: one line per analyst, `name:scrypt$...` (`detector console --add-user NAME`).
    users_file: Path = Path("data/console-users")
    # Signs the session cookie; unset: a random one per start (everyone logs in again after a restart).
    session_secret: SecretStr | None = None
    # Consumer group of the console's alerts reader (independent of the daemons' group).
    group_id: str = "detector-console"
    page_size: int = Field(50, ge=1, le=1000)
    # The alert list reloads itself this often (its filter is in the URL, so it stays).
    refresh_seconds: int = Field(10, ge=0, le=3600)
    # The stream's events shown on an alert's page: at most this many before the alert, found
    # among the input partition's last `events_scan` records up to the alert's offset.
    recent_events: int = Field(50, ge=1, le=1000)
    events_scan: int = Field(20_000, ge=1, le=1_000_000)


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)
    # Basic auth on /metrics (both set, or neither); the probes stay open.
    basic_auth_username: str | None = None
    basic_auth_password: SecretStr | None = None
    # HTTPS for the whole port (both set, or neither).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> HttpConfig:
        if (self.basic_auth_username is None) != (self.basic_auth_password is None):
            raise ValueError("basic_auth_username and basic_auth_password go together")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together")
        return self

    def auth(self) -> tuple[str, str] | None:
        if self.basic_auth_username is None or self.basic_auth_password is None:
            return None
        return self.basic_auth_username, self.basic_auth_password.get_secret_value()

    def tls(self) -> tuple[str, str] | None:
        return (str(self.tls_certfile), str(self.tls_keyfile)) if self.tls_certfile and self.tls_keyfile else None


class RuntimeConfig(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout_seconds: float = Field(20.0, gt=0)
    # 64 KiB: far above a real event (~250 bytes) and far below Kafka's default 1 MiB message cap.
    max_event_bytes: int = Field(65536, ge=64)
    # Events stamped more than this far from now are dead-lettered as clock errors.
    max_future_seconds: float = Field(3600.0, ge=0)
    max_past_seconds: float = Field(10 * 365 * 24 * 3600, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        nested_model_default_partial_update=True,
    )

    kafka: KafkaConfig = KafkaConfig()
    features: FeaturesConfig = FeaturesConfig()
    model: ModelConfig = ModelConfig()
    state: StateConfig = StateConfig()
    alerts: AlertsConfig = AlertsConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    console: ConsoleConfig = ConsoleConfig()
    http: HttpConfig = HttpConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides the YAML file passed as init kwargs.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _transaction_outlasts_a_checkpoint(self) -> Settings:
        k, interval = self.kafka, self.state.checkpoint_interval_seconds
        if k.delivery == "exactly_once" and k.transaction_timeout_ms < 1000 * (interval + 30):
            raise ValueError(
                f"kafka.transaction_timeout_ms ({k.transaction_timeout_ms}) must exceed "
                f"state.checkpoint_interval_seconds ({interval:g} s) plus the 30 s a checkpoint may wait for Kafka"
            )
        return self

    @model_validator(mode="after")
    def _batch_fits_in_state(self) -> Settings:
        if self.state.max_streams < self.kafka.max_poll_records:
            # A batch's streams must all fit at once, or one batch would evict its own streams.
            raise ValueError(
                f"state.max_streams ({self.state.max_streams}) must be >= kafka.max_poll_records "
                f"({self.kafka.max_poll_records})"
            )
        return self

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data; SecretStr values dump as '**********'."""
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return data


def _one_line(err: ValidationError, what: str = "config") -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    value = first.get("input")
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    if isinstance(value, dict):
        # A whole-section check: the message names the key itself ("sasl_password_file: ...").
        sub, sep, rest = msg.partition(": ")
        if sep and sub.isidentifier():
            key, msg = f"{key}.{sub}", rest
        return f"{what} error: {key}: {msg}{more}"
    shown = "***" if "password" in key else repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{what} error: {key}: {msg} (got {shown}){more}"


def read_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file whose top level is a mapping; ConfigError with one line otherwise."""
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} error: file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} error: {p}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} error: {p}{where}: not valid YAML") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{what} error: {p}: top level must be a mapping of sections")
    return loaded or {}


def validated(model: type[M], data: dict[str, Any], what: str = "config") -> M:
    """`model(**data)`, or ConfigError with one line naming the first bad key."""
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, what)) from None


def load_config(path: str | Path | None = None) -> Settings:
    """Load and validate; raise ConfigError with one line naming the first bad key."""
    return validated(Settings, read_mapping(path) if path is not None else {})
