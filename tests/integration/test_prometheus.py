"""The operations files against real components: promtool, amtool, and a real Prometheus server
scraping a running detector while a fraud stream flows through the real broker."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from detector.jsonl import read_jsonl
from detector.service.loop import Detector
from tests.helpers import free_port, wait_for
from tests.integration.anomalies import with_blatant
from tests.integration.conftest import require
from tests.integration.kafka_io import produce
from tests.integration.test_pipeline import BAD, settings_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
# Grafana's variables, as the dashboard would fill them for this test's job.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "5m", "$job": "detector"}


def run(*cmd: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_checks_the_config_and_rules_and_runs_the_rule_unit_tests() -> None:
    promtool = require("promtool")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "rules.yml"]):
        r = run(promtool, *args)
        assert r.returncode == 0, r.stdout + r.stderr
    r = run(promtool, "test", "rules", "rules.test.yml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    # Every alerting rule has a unit test, and a runbook.
    rules = [x for g in yaml.safe_load((PROM / "rules.yml").read_text())["groups"] for x in g["rules"]]
    alerts = {x["alert"] for x in rules if "alert" in x}
    assert alerts == {
        "DetectorDown",
        "DetectorNotReady",
        "ConsumerLagHigh",
        "EventLagHigh",
        "DeadLetterRateHigh",
        "AnomalyRateSpike",
        "NoEventsReceived",
        "CheckpointFailing",
        "DetectorTransactionsAborting",
        "AlertPrecisionLow",
        "DetectorModelDrift",
    }
    assert all(x["annotations"]["runbook"] and x["annotations"]["runbook_url"] for x in rules if "alert" in x)
    tests = yaml.safe_load((PROM / "rules.test.yml").read_text())["tests"]
    fired = {a["alertname"] for t in tests for a in t["alert_rule_test"] if a["exp_alerts"]}
    silent = {a["alertname"] for t in tests for a in t["alert_rule_test"] if not a["exp_alerts"]}
    assert fired == alerts and silent == alerts


def test_amtool_accepts_the_alertmanager_config_and_routes_each_severity() -> None:
    amtool = require("amtool")
    cfg = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    r = run(amtool, "check-config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    for labels, receiver in (
        (["alertname=AnomalyRateSpike", "severity=critical"], "fraud-pager"),
        (["alertname=DetectorDown", "severity=critical"], "ops-pager"),
        (["alertname=ConsumerLagHigh", "severity=warning"], "ops-chat"),
    ):
        r = run(amtool, "config", "routes", "test", f"--config.file={cfg}", f"--verify.receivers={receiver}", *labels)
        assert r.returncode == 0, f"{labels}: {r.stdout}{r.stderr}"


class Prometheus:
    """A real Prometheus server on a free loopback port, scraping `target` every second."""

    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_port()
        self.tmp = tmp
        cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROM / "rules.yml")],
            "scrape_configs": [{"job_name": "detector", "static_configs": [{"targets": [target]}]}],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))

    def __enter__(self) -> Prometheus:
        self.log = open(self.tmp / "prometheus.log", "w")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(
            [
                require("prometheus"),
                f"--config.file={self.tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self._get("/-/ready") is not None, 60, "Prometheus ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def _get(self, path: str) -> bytes | None:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5).read()  # type: ignore[no-any-return]
        except OSError:
            return None

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if body is None:
            return []
        doc = json.loads(body)
        assert doc["status"] == "success", f"{expr}: {doc}"
        return doc["data"]["result"]  # type: ignore[no-any-return]


def dashboard_queries() -> list[tuple[str, str]]:
    d = json.loads((ROOT / "deploy/grafana/detector-dashboard.json").read_text())
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"]
            for k, v in GRAFANA_VARS.items():
                expr = expr.replace(k, v)
            out.append((p["title"], expr))
    return out


@pytest.fixture
def scraped_detector(  # type: ignore[no-untyped-def]
    broker, default_names, small_settings, model_dir, rival_dir, test_file, tmp_path: Path
) -> Iterator[tuple[Detector, Prometheus]]:
    data = settings_for(small_settings, broker.bootstrap, default_names, model_dir).model_dump()
    data["state"]["checkpoint_interval_seconds"] = 1.0
    # A challenger in shadow, so the dashboard's champion-and-challenger row has its series too.
    data["model"]["shadow_path"] = rival_dir
    data["kafka"]["shadow_alerts_topic"] = f"shadow-{default_names['input']}"
    app = Detector(type(small_settings)(**data))
    t = threading.Thread(target=app.run, kwargs={"timeout": 400}, daemon=True)
    t.start()
    try:
        wait_for(lambda: app.ready(), 90, "partition assignment")
        with Prometheus(tmp_path, f"127.0.0.1:{app.http_port}") as prom:
            # The counters' zeros are scraped before the first event: rate() sees every alert.
            wait_for(lambda: prom.query('detector_alerts_total{job="detector"}'), 60, "a first scrape")
            lines = with_blatant(list(read_jsonl(test_file)))  # alerts from any model
            produce(
                broker.bootstrap, default_names["input"], [(orjson.loads(x)["stream_id"].encode(), x) for x in lines]
            )
            produce(broker.bootstrap, default_names["input"], [(b"bad", raw) for raw, _ in BAD])
            total = len(lines) + len(BAD)
            wait_for(lambda: app.stats.events >= total, 120, f"{total} events scored")
            yield app, prom
    finally:
        app.stop()
        t.join(30)


def test_every_dashboard_query_and_recording_rule_returns_data_from_a_real_scrape(scraped_detector) -> None:  # type: ignore[no-untyped-def]
    app, prom = scraped_detector
    assert app.stats.alerts > 0 and app.stats.invalid == len(BAD)
    # Prometheus has scraped the final counters.
    wait_for(
        lambda: (
            [float(r["value"][1]) for r in prom.query('sum(detector_alerts_total{job="detector"})')]
            == [float(app.stats.alerts)]
        ),
        60,
        "the alert count scraped",
    )
    queries = dashboard_queries()
    assert len(queries) >= 16
    records = [
        x["record"]
        for g in yaml.safe_load((PROM / "rules.yml").read_text())["groups"]
        for x in g["rules"]
        if "record" in x
    ]
    wanted = [*queries, *((f"recording rule {r}", r) for r in records)]

    # Rates need two scrapes, the top-streams gauge one 15 s period, recording rules an evaluation.
    def missing() -> list[str]:
        return [f"{title}: {expr}" for title, expr in wanted if not prom.query(expr)]

    wait_for(lambda: not missing(), 90, f"every query to return data (still empty: {missing()})")
    # The alerts-per-minute panel shows the alerts that were raised, by severity (its peak over
    # the last 5 minutes: the burst may be over by now).
    peak = prom.query('max_over_time((sum by (severity) (job:detector_alerts:rate1m{job=~"detector"}) * 60)[5m:1s])')
    raised = {r["metric"]["severity"]: float(r["value"][1]) for r in peak}
    assert raised and max(raised.values()) > 0
    window = prom.query('sum(increase(detector_alerts_total{job="detector"}[5m]))')
    assert float(window[0]["value"][1]) > 0
    top = prom.query('topk(10, max by (stream_id) (max_over_time(detector_top_stream_score{job=~"detector"}[5m])))')
    assert 0 < len(top) <= 10
    dead = prom.query('sum by (reason) (job:detector_dead_letters:rate5m{job=~"detector"})')
    assert {r["metric"]["reason"] for r in dead} >= {"undecodable", "missing_field"}
