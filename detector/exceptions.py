"""One error hierarchy: every failure the daemon reports on purpose is a DetectorError."""


class DetectorError(Exception):
    """Base of all errors raised on purpose by detector."""


class ConfigError(DetectorError):
    """The configuration is invalid; the message is one line naming the key."""


# Every reason an event can be dead-lettered for: metric labels are created up front from it.
INVALID_REASONS = (
    "bad_id",
    "bad_timestamp",
    "bad_verdict",
    "clock_skew",
    "empty",
    "missing_field",
    "non_finite",
    "not_an_object",
    "out_of_range",
    "oversized",
    "undecodable",
    "unknown_alert",
    "unknown_stream",
    "wrong_type",
)


class InvalidEvent(DetectorError):
    """An event failed decoding or validation; `reason` is a short metric-safe label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DataError(DetectorError):
    """An input or output file of an offline command (train, score, evaluate, simulate, replay) is
    missing, unreadable or holds too little usable data; the message is one line naming the file."""


class ModelError(DetectorError):
    """A model artifact is missing, corrupt or incompatible with the running config."""


class KafkaUnavailable(DetectorError):
    """The broker could not be reached or refused an operation the daemon needs."""
