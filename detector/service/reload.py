"""Model hot reload: SIGHUP, or a new metadata.json in the model folder (`model.watch_seconds`).

    watch = ModelWatch(settings.model.path, settings.model.watch_seconds, spec)
    watch.request()                       # from the SIGHUP handler: only sets a flag
    art = watch.poll(current_version)     # between batches: a new Artifact, or None

A folder that no longer loads (a half-copied model, another feature spec) is refused with a
log line and a metric; the running model goes on serving.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from detector.core.features import FeatureSpec
from detector.exceptions import DetectorError
from detector.offline.model import Artifact, load_artifact
from detector.service.metrics import Metrics

log = logging.getLogger("detector")


class ModelWatch:
    def __init__(self, path: Path, watch_seconds: float, spec: FeatureSpec, metrics: Metrics) -> None:
        self.path, self.watch_seconds, self.spec, self.metrics = Path(path), watch_seconds, spec, metrics
        self._requested = threading.Event()
        self._mtime = self._metadata_mtime()
        self._checked = time.monotonic()

    def request(self) -> None:
        self._requested.set()

    def _metadata_mtime(self) -> float:
        try:
            return (self.path / "metadata.json").stat().st_mtime
        except OSError:
            return 0.0

    def poll(self, version: str) -> Artifact | None:
        """The model to switch to, if a reload is requested (or the folder changed) and the folder
        holds a loadable model of another version than `version`."""
        if self.watch_seconds > 0 and time.monotonic() - self._checked >= self.watch_seconds:
            self._checked = time.monotonic()
            mtime = self._metadata_mtime()
            if mtime != self._mtime:
                self._mtime = mtime
                self._requested.set()
        if not self._requested.is_set():
            return None
        self._requested.clear()
        try:
            art = load_artifact(self.path, self.spec)
        except DetectorError as exc:
            self.metrics.model_reloads.labels(result="refused").inc()
            log.error("model reload refused, still serving %s: %s", version, exc)
            return None
        return None if art.version == version else art
