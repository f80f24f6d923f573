"""Detection quality: the LSTM beside every baseline, same training data, same target rate, with
paired bootstrap intervals over streams; in the training world, in a shifted world, and on
single-series operations metrics.

Cards: one model trained on the default scenario (seed 101), tested on two other seeds of the
default scenario and on two seeds of config/scenarios/shifted.yaml (other home countries, amounts
20x, busier cards, honest ATM use, three fraud kinds the training world lacks), with and without
the alert budget at 2 per 10k. Metrics: each series trained on its own first 15% (as the public
benchmark of univariate metric streams prescribes), scored causally over the whole series, the
LSTM against the rolling z-score; series are pooled with each one's score over its own threshold.
Seeds are fixed, so the same run gives the same numbers.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from detector.config import Settings, load_config
from detector.core.scorer import is_alert
from detector.offline.baselines.compare import baseline_scores, paired_bootstrap
from detector.offline.baselines.models import BASELINES
from detector.offline.dataset import load_events
from detector.offline.evaluate import evaluate_file, score_dataset
from detector.offline.measures import evaluate
from detector.offline.training import train_from_file
from simulators.cli import simulate

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("pr_auc", "roc_auc", "precision", "recall", "incident_recall", "false_alerts_per_10k", "mean_delay_events")


def _with(settings: Settings, **sections: dict[str, Any]) -> Settings:
    d = settings.model_dump()
    return Settings(**{**d, **{k: {**d[k], **v} for k, v in sections.items()}})


def _cards_row(name: str, cards: Settings, model: Path, train: Path, test: Path, baselines: tuple[str, ...]) -> dict:
    rep = evaluate_file(cards, model, test)
    art, ds, r = score_dataset(cards, model, test)
    labels = ds.labels()
    assert labels is not None
    scores = np.where(r.warming, 0.0, r.score)
    streams = [e.stream_id for e in ds.events]
    ts = np.array([e.ts for e in ds.events])
    incidents = ds.field("incident_id")
    spec_events = load_events(train, ds_spec(art), cards.runtime.max_event_bytes).events
    normal_train = [e for e in spec_events if e.record.get("label", 0) == 0]
    models: dict[str, Any] = {"lstm": {k: rep[k] for k in KEYS}}
    budget = _with(cards, alerts={"budget_per_10k": 2.0})
    b_rep = evaluate_file(budget, model, test)
    models["lstm, budget 2/10k"] = {k: b_rep[k] for k in KEYS}
    for b in baselines:
        s, th, _ = baseline_scores(b, ds_spec(art), normal_train, ds.events, art.threshold.target_rate, 7)
        m = evaluate(s, is_alert(s, np.zeros(len(s), bool), th), labels, incidents, streams, ts)
        d, lo, hi = paired_bootstrap(labels, scores, s, streams, seed=7)
        models[b] = {**{k: m[k] for k in KEYS}, "lstm_minus": [d, lo, hi]}
        print(f"    {b:<10} PR-AUC {m['pr_auc']:.3f}  LSTM - it {d:+.3f} [{lo:+.3f}, {hi:+.3f}]", flush=True)
    row = {"data": name, "events": rep["events"], "models": models, "by_type": rep.get("by_fraud_type", {})}
    _print(row)
    return row


def ds_spec(art: Any) -> Any:
    from detector.offline.evaluate import model_spec

    return art.bind(model_spec(art))


def _metrics_row(
    series: int, days: int, seed: int, smoke: bool, tmp: Path, settings: Settings | None = None
) -> dict[str, Any]:
    """Each series trained on its first 15%, scored over all of it; LSTM vs rolling z-score."""
    settings = settings or load_config(ROOT / "config/metrics.yaml")
    if smoke:
        settings = _with(settings, model={"epochs": 2, "min_steps": 20})
    data = tmp / "metrics.jsonl"
    simulate("metrics", series, days, None, seed, str(data))
    by: dict[str, list[str]] = {}
    for line in data.read_text().splitlines():
        by.setdefault(json.loads(line)["stream_id"], []).append(line)
    parts: dict[str, list[Any]] = {k: [] for k in ("lstm", "lstm_alert", "z", "z_alert", "labels", "inc", "sid", "ts")}
    for sid, lines in sorted(by.items()):
        train, full = tmp / f"{sid}-train.jsonl", tmp / f"{sid}.jsonl"
        train.write_text("\n".join(lines[: int(0.15 * len(lines))]) + "\n")
        full.write_text("\n".join(lines) + "\n")
        model = tmp / f"{sid}-model"
        train_from_file(settings, train, model, log=lambda _m: None)
        art, ds, r = score_dataset(settings, model, full)
        th = art.threshold.value
        parts["lstm"].append(np.where(r.warming, 0.0, r.score) / th)
        parts["lstm_alert"].append(r.alert)
        tr = load_events(train, ds_spec(art)).events
        z, zth, _ = baseline_scores("zscore", ds_spec(art), tr, ds.events, art.threshold.target_rate, 7)
        parts["z"].append(z / zth)
        parts["z_alert"].append(is_alert(z, np.zeros(len(z), bool), zth))
        parts["labels"].append(ds.labels())
        parts["inc"] += ds.field("incident_id")
        parts["sid"] += [sid] * len(ds.events)
        parts["ts"].append(np.array([e.ts for e in ds.events]))
    cat = {k: np.concatenate(v) if k not in ("inc", "sid") else v for k, v in parts.items()}
    m_l = evaluate(cat["lstm"], cat["lstm_alert"], cat["labels"], cat["inc"], cat["sid"], cat["ts"])
    m_z = evaluate(cat["z"], cat["z_alert"], cat["labels"], cat["inc"], cat["sid"], cat["ts"])
    d, lo, hi = paired_bootstrap(cat["labels"], cat["lstm"], cat["z"], cat["sid"], seed=7)
    row = {
        "data": f"metrics, {series} series x {days} days (seed {seed}), each trained on its first 15%",
        "events": len(cat["sid"]),
        "models": {
            "lstm": {k: m_l[k] for k in KEYS},
            "zscore": {**{k: m_z[k] for k in KEYS}, "lstm_minus": [d, lo, hi]},
        },
        "by_type": {},
    }
    _print(row)
    return row


def run(smoke: bool = False) -> dict[str, Any]:
    cards_train = (300, 10) if smoke else (2000, 30)
    cards_test = (150, 10) if smoke else (1500, 30)
    baselines = BASELINES
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        cards = Settings()
        if smoke:
            cards = _with(cards, model={"epochs": 2})
        train = tmp / "cards-train.jsonl"
        simulate("cards", *cards_train, str(ROOT / "config/scenarios/default.yaml"), 101, str(train))
        train_from_file(cards, train, tmp / "cards-model", log=lambda _m: None)
        tests = [("default", 303), ("default", 304), ("shifted", 404), ("shifted", 405)]
        for scenario, seed in tests[:: 2 if smoke else 1]:
            test = tmp / f"cards-{scenario}-{seed}.jsonl"
            simulate("cards", *cards_test, str(ROOT / f"config/scenarios/{scenario}.yaml"), seed, str(test))
            name = f"cards, {scenario} (seed {seed})"
            rows.append(_cards_row(name, cards, tmp / "cards-model", train, test, baselines))
        rows.append(_metrics_row(4 if smoke else 24, 7 if smoke else 14, 11, smoke, tmp))
    return {"rows": rows}


def _print(r: dict[str, Any]) -> None:
    parts = []
    for name, m in r["models"].items():
        d = m.get("lstm_minus")
        ci = f" (LSTM - it {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}])" if d else ""
        parts.append(f"{name} {m['pr_auc']:.3f}/{m['incident_recall']:.3f}/{m['false_alerts_per_10k']:.2f}{ci}")
    print(f"  {r['data']}: PR-AUC/incident recall/false alerts per 10k: " + "; ".join(parts), flush=True)
