"""The analysts' console in a real headless Chromium, over a real daemon on the real broker: log in,
see the alert, open it, see the stream's recent events (markup shown as text), click legit; the
verdict is on the topic, the daemon counts it, and the stream's next ordinary events stay quiet."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from detector.config import Settings
from detector.console.users import add_user
from detector.service.loop import Detector
from tests.helpers import free_port, wait_for
from tests.integration.conftest import require
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_pipeline import alert_everything_model, settings_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "console-alert.png"
HOSTILE = {"merchant_id": "<script>alert('x')</script>", "merchant_category": "<b>bold</b>&amp;"}


def events(stream: str, n: int, start: int, **extra: Any) -> list[tuple[bytes, bytes]]:
    now = time.time()
    return [
        (
            stream.encode(),
            orjson.dumps({"event_id": f"{stream}-{start + i}", "stream_id": stream, "ts": now + i * 0.001,
                          "amount": 20.0 + i, "channel": "pos", "country": "US", "merchant_category": "grocery",
                          "merchant_id": f"m{i}", **extra}),
        )
        for i in range(n)
    ]  # fmt: skip


class Console:
    """`detector console`'s app under uvicorn, in this process, on a free 127.0.0.1 port."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from detector.console.app import make_app

        self.port = settings.console.port
        self.server = uvicorn.Server(
            uvicorn.Config(make_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Console:
        self.thread.start()
        wait_for(lambda: _status(f"http://127.0.0.1:{self.port}/healthz") == 200, 30, "the console up")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def _status(url: str) -> int:
    try:
        return int(urllib.request.urlopen(url, timeout=2).status)
    except OSError:
        return 0


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = require("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(require("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


def test_triage_an_alert_in_chromium(broker, default_names, small_settings, model_dir, tmp_path: Path, browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    names = default_names
    alert_everything_model(model_dir, tmp_path / "m")  # every event alerts unless a verdict quiets it
    d = settings_for(small_settings, broker.bootstrap, names, tmp_path / "m").model_dump()
    d["model"]["warmup_events"] = 0
    d["console"].update(port=free_port(), db_path=tmp_path / "console.sqlite", users_file=tmp_path / "users",
                        group_id=f"console-{names['group']}", refresh_seconds=2)  # fmt: skip
    s = Settings(**d)
    add_user(tmp_path / "users", "ana", "correct horse")
    app = Detector(s)
    t = threading.Thread(target=app.run, kwargs={"timeout": 300}, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{s.console.port}"
    try:
        wait_for(lambda: app.ready(), 90, "the daemon ready")
        produce(broker.bootstrap, names["input"], events("card-x", 4, 0) + events("card-x", 1, 4, **HOSTILE))
        with Console(s):
            browser.get(base + "/")
            assert "/login" in browser.current_url  # nothing without a login
            browser.find_element(By.ID, "user").send_keys("ana")
            browser.find_element(By.ID, "password").send_keys("wrong")
            browser.find_element(By.ID, "login").click()
            # A click does not wait for the page it posts to: poll for it.
            wait_for(lambda: "wrong name or password" in browser.page_source, 20, "the login refused")
            browser.find_element(By.ID, "user").send_keys("ana")
            browser.find_element(By.ID, "password").send_keys("correct horse")
            browser.find_element(By.ID, "login").click()
            wait_for(lambda: "/login" not in browser.current_url, 20, "logged in")

            def five_alerts() -> bool:
                browser.get(base + "/?stream=card-x")
                return len(browser.find_elements(By.CSS_SELECTOR, "#alerts tr")) == 6  # a header and 5

            wait_for(five_alerts, 60, "card-x's five alerts listed")
            # A logged-in session posting a verdict without the form's CSRF token is refused.
            cookie = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
            link = browser.find_elements(By.CSS_SELECTOR, "#alerts tr td a")[0].get_attribute("href")
            forged = urllib.request.Request(f"{link}/verdict", data=b"verdict=fraud", headers={"Cookie": cookie})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(forged, timeout=10)
            assert refused.value.code == 403
            browser.find_elements(By.CSS_SELECTOR, "#alerts tr td a")[0].click()  # the newest: the hostile event's
            table = wait_for(lambda: browser.find_elements(By.ID, "events"), 20, "the alert page")[0].text
            assert HOSTILE["merchant_id"] in table and HOSTILE["merchant_category"] in table  # shown as text
            assert "bold" not in [b.text for b in browser.find_elements(By.CSS_SELECTOR, "#events b")]
            assert not browser.find_elements(By.TAG_NAME, "script")  # nothing from the event became markup
            assert len(browser.find_elements(By.CSS_SELECTOR, "#events tr")) == 6  # the 5 events up to the alert
            browser.find_element(By.ID, "note").send_keys("customer confirmed the purchase")
            if os.environ.get("UPDATE_SCREENSHOTS"):
                SCREENSHOT.parent.mkdir(exist_ok=True)
                browser.save_screenshot(str(SCREENSHOT))
            browser.find_element(By.ID, "verdict-legit").click()
            done = wait_for(lambda: browser.find_elements(By.ID, "done"), 20, "the verdict recorded")
            assert done[0].text == "Verdict recorded: legit"
            assert browser.find_element(By.ID, "status").text == "legit"
            verdicts = [orjson.loads(m.value) for m in read_all(broker.bootstrap, names["verdicts"], expect=1)]
        schema = json.loads((ROOT / "detector/schemas/verdict.schema.json").read_text())
        assert len(verdicts) == 1 and verdicts[0]["analyst"] == "ana" and verdicts[0]["verdict"] == "legit"
        jsonschema.validate(verdicts[0], schema)
        got = app.registry.get_sample_value
        wait_for(lambda: sum(got("detector_verdicts_total", {"verdict": "legit", "severity": s}) or 0
                             for s in ("warning", "critical")) == 1, 60, "the daemon counting the verdict")  # fmt: skip
        produce(broker.bootstrap, names["input"], events("card-x", 3, 10) + events("card-y", 2, 0))
        wait_for(lambda: app.stats.events >= 10, 60, "the later events scored")
        alerts = [orjson.loads(m.value) for m in read_all(broker.bootstrap, names["alerts"], expect=app.stats.alerts)]
    finally:
        app.stop()
        t.join(60)
    by_stream: dict[str, int] = {}
    for a in alerts:
        by_stream[a["stream_id"]] = by_stream.get(a["stream_id"], 0) + 1
    assert by_stream == {"card-x": 5, "card-y": 2}  # card-x's ordinary events after legit: quiet
