"""What users deploy, checked by parsing: no Docker engine or cluster runs here.

The Prometheus rules and the dashboard's queries are checked against a real Prometheus in
tests/integration/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from detector.cli.main import WATCHDOG_GRACE_S
from detector.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEFAULTS = load_config(ROOT / "config" / "detector.yaml")

DASHBOARD_PANELS = {
    "Alerts per minute by severity",
    "Top anomalous streams",
    "Anomaly score distribution",
    "Events/s by result",
    "Dead letters by reason",
    "Consumer lag per partition",
    "Event lag p50 / p99",
    "Batch duration p50 / p99",
    "Active streams and evictions",
    "Checkpoint duration p99 and failures",
    "Model version and threshold",
    "Rebalances",
}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "grafana" / "detector-dashboard.json").read_text())
    return data


def test_dashboard_has_every_panel_with_a_query_on_the_datasource_variable() -> None:
    d = dashboard()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = [p for p in d["panels"] if p["type"] != "row"]
    assert DASHBOARD_PANELS <= {p["title"] for p in panels}
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    assert d["uid"] == "detector-overview"


def test_grafana_provisioning_points_at_the_dashboard_folder_compose_mounts() -> None:
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/detector.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = [v.split(":")[1] for v in compose["services"]["grafana"]["volumes"]]
    assert any(m.startswith(path) for m in mounts)
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_brings_up_every_service_with_existing_files() -> None:
    c = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    s = c["services"]
    assert {"kafka", "topics", "model", "detector", "replay", "prometheus", "alertmanager", "grafana"} <= set(s)
    for name, svc in s.items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                assert (DEPLOY / src).exists(), f"{name}: {src} missing"
            else:
                assert src in c["volumes"], f"{name}: named volume {src} not declared"
        for p in svc.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", p), f"{name}: {p} must bind loopback only"
        build = svc.get("build")
        if build:
            assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
        for dep, cond in (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict) else []:
            assert dep in s and cond["condition"] in {"service_healthy", "service_completed_successfully"}
    det = s["detector"]
    assert "127.0.0.1:9108:9108" in det["ports"]
    assert det["environment"]["DETECTOR__KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert det["read_only"] is True and "healthcheck" in s["kafka"]
    # The topics the one-shot creator makes are the config's defaults.
    made = s["topics"]["command"][0]
    k = DEFAULTS.kafka
    for topic in (k.input_topic, k.alerts_topic, k.dead_letter_topic, k.state_topic, k.verdicts_topic):
        assert topic in made
    assert "cleanup.policy=compact" in made
    prom = [v.split(":")[0] for v in s["prometheus"]["volumes"] if v.startswith(".")]
    assert "./prometheus/rules.yml" in prom and "./prometheus/prometheus.yml" in prom
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["detector:9108"]


def test_dockerfile_is_multistage_pinned_non_root_exec_form_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text)
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "COPY --from=build" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    entry = re.search(r"^ENTRYPOINT (.+)$", text, re.M)
    assert entry and json.loads(entry.group(1)) == ["detector"]
    health = re.search(r"HEALTHCHECK .*\n?.*CMD (\[.*\])", text)
    assert health and "/healthz" in health.group(1)
    assert re.search(r"pip==\d", text) and "'.[fast]'" in text


def k8s() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and "kind" in doc:
                docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests_run_the_daemon_safely() -> None:
    m = k8s()
    dep = m["Deployment"]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    c = spec["containers"][0]
    assert 1 <= dep["spec"]["replicas"] <= DEFAULTS.kafka.partitions
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    assert spec["terminationGracePeriodSeconds"] > DEFAULTS.runtime.shutdown_timeout_seconds + WATCHDOG_GRACE_S
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "metrics", "containerPort": 9108, "protocol": "TCP"} in c["ports"]
    labels = pod["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"] == labels
    # The ConfigMap is config/detector.yaml verbatim, mounted where the args read it.
    cm = m["ConfigMap"]
    assert cm["data"]["detector.yaml"] == (ROOT / "config/detector.yaml").read_text()
    mounts = {v["name"]: v["mountPath"] for v in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert c["args"][-1] == f"{mounts['config']}/detector.yaml"
    assert "tmp" in mounts  # the only writable path with a read-only root
    # Credentials come from the Secret, never from the ConfigMap.
    secret = m["Secret"]
    refs = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e]
    assert refs and all(r["name"] == secret["metadata"]["name"] and r["key"] in secret["stringData"] for r in refs)
    assert "sasl_password: null" in cm["data"]["detector.yaml"]
    svc = m["Service"]
    assert svc["spec"]["selector"] == labels and svc["spec"]["ports"][0]["port"] == 9108
    assert m["PodMonitor"]["spec"]["selector"]["matchLabels"] == labels
    assert m["PodMonitor"]["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(
        f.name for f in (DEPLOY / "k8s").glob("*.yaml") if f.stem != "kustomization"
    )


def test_systemd_unit_restarts_on_failure_with_a_stop_budget_and_hardening() -> None:
    unit: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd/detector.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            unit.setdefault(k, []).append(v)
    assert unit["Restart"] == ["on-failure"]
    assert int(unit["TimeoutStopSec"][0]) > DEFAULTS.runtime.shutdown_timeout_seconds + WATCHDOG_GRACE_S
    assert unit["User"] == ["detector"] and unit["KillSignal"] == ["SIGTERM"]
    assert unit["ExecStart"][0].split()[1:3] == ["run", "--config"]
    for key in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert unit[key][0] in {"yes", "strict"}, key
    assert unit["RestartPreventExitStatus"] == ["2"]  # a config error is not retried
