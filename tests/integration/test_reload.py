"""Hot reload: a new model version in the folder is swapped in; a broken one is refused."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import orjson
import pytest

from detector.config import Settings
from detector.jsonl import read_jsonl
from detector.offline.training import train_from_file
from detector.service.loop import Detector
from tests.helpers import wait_for
from tests.integration.kafka_io import produce
from tests.integration.test_pipeline import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def metric(app: Detector, name: str, **labels: str) -> float:
    return app.registry.get_sample_value(name, labels) or 0.0


def test_new_version_is_swapped_in_and_a_broken_one_refused(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, train_file, test_file, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    shutil.copytree(model_dir, live)
    data = settings_for(small_settings, broker.bootstrap, names, live).model_dump()
    data["model"]["watch_seconds"] = 0.2
    s = Settings(**data)
    app = Detector(s)
    v1 = app.artifact.version
    t = threading.Thread(target=app.run, kwargs={"timeout": 180}, daemon=True)
    t.start()
    lines = list(read_jsonl(test_file))[:2000]
    try:
        wait_for(lambda: app.ready(), 60, "ready")
        produce(broker.bootstrap, names["input"], [(orjson.loads(x)["stream_id"].encode(), x) for x in lines])
        wait_for(lambda: app.stats.events >= len(lines), 60, "first events")

        # A new model, trained with another seed, written over the live folder.
        staged = tmp_path / "staged"
        train_from_file(s, train_file, staged, log=lambda _m: None, seed=99)
        for f in ("model.keras", "metadata.json"):
            shutil.copy(staged / f, live / f)
        wait_for(lambda: metric(app, "detector_model_reloads_total", result="ok") == 1, 30, "the reload")
        v2 = app.artifact.version
        assert v2 != v1
        assert (
            app.registry.get_sample_value(
                "detector_model_info", {"version": v2, "threshold_method": app.artifact.threshold.method}
            )
            == 1.0
        )

        # A corrupt model file: refused, the old one keeps serving and scoring.
        (live / "model.keras").write_bytes(b"corrupt")
        (live / "metadata.json").touch()
        wait_for(lambda: metric(app, "detector_model_reloads_total", result="refused") >= 1, 30, "the refusal")
        assert app.artifact.version == v2
        before = app.stats.events
        produce(broker.bootstrap, names["input"], [(orjson.loads(x)["stream_id"].encode(), x) for x in lines[:500]])
        wait_for(lambda: app.stats.events >= before + 500, 60, "scoring to go on")
    finally:
        app.stop()
        t.join(30)
    assert not t.is_alive()
