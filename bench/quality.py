"""Detection quality: `detector evaluate` on the simulator scenarios, LSTM and River HST side by side.

Cards: one model trained on the default scenario (as `make demo` trains it), evaluated on held-out
easy, default and hard scenario data (other seeds). Sensors: a model trained on normal machines,
evaluated on other machines. Seeds are fixed, so the same run gives the same numbers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from detector.config import Settings, load_config
from detector.offline import evaluate_file
from detector.training import train_from_file
from simulators.cli import simulate

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("pr_auc", "roc_auc", "precision", "recall", "incident_recall", "false_alerts_per_10k", "mean_delay_events")


def _row(name: str, rep: dict[str, Any]) -> dict[str, Any]:
    b = rep.get("baseline", {})
    return {
        "data": name,
        "events": rep["events"],
        "lstm": {k: rep.get(k) for k in KEYS},
        "river_hst": {k: b.get(k) for k in KEYS},
        "by_type": rep.get("by_fraud_type", {}),
    }


def run(smoke: bool = False) -> dict[str, Any]:
    cards_train = (300, 7) if smoke else (2000, 30)
    cards_test = (150, 7) if smoke else (2000, 30)
    sensors_train = (40, 3) if smoke else (200, 14)
    sensors_test = (20, 3) if smoke else (100, 14)
    rows = []
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        cards = Settings()
        if smoke:
            cards = Settings(**{**cards.model_dump(), "model": {**cards.model_dump()["model"], "epochs": 2}})
        train = tmp / "cards-train.jsonl"
        simulate("cards", *cards_train, str(ROOT / "config/scenarios/default.yaml"), 101, str(train))
        train_from_file(cards, train, tmp / "cards-model", log=lambda _m: None)
        for scenario in ("easy", "default", "hard"):
            test = tmp / f"cards-{scenario}.jsonl"
            simulate("cards", *cards_test, str(ROOT / f"config/scenarios/{scenario}.yaml"), 303, str(test))
            rows.append(_row(f"cards, {scenario}", evaluate_file(cards, tmp / "cards-model", test, "river-hst")))
            _print(rows[-1])
        # The options a user can switch on: novelty flags and per-feature error weights.
        d = cards.model_dump()
        variant = Settings(
            **{
                **d,
                "features": {**d["features"], "novelty": ["country", "merchant_category", "merchant_id"]},
                "model": {**d["model"], "error_weighting": "per_feature"},
            }
        )
        train_from_file(variant, train, tmp / "cards-variant", log=lambda _m: None)
        for scenario in ("default", "hard"):
            rep = evaluate_file(variant, tmp / "cards-variant", tmp / f"cards-{scenario}.jsonl", "river-hst")
            rows.append(_row(f"cards, {scenario}, novelty + per-feature weights", rep))
            _print(rows[-1])
        sensors = load_config(ROOT / "config/sensors.yaml")
        if smoke:
            sensors = Settings(**{**sensors.model_dump(), "model": {**sensors.model_dump()["model"], "epochs": 2}})
        strain, stest = tmp / "sensors-train.jsonl", tmp / "sensors-test.jsonl"
        simulate("sensors", *sensors_train, None, 1, str(strain))
        simulate("sensors", *sensors_test, None, 2, str(stest))
        train_from_file(sensors, strain, tmp / "sensors-model", log=lambda _m: None)
        rows.append(_row("sensors", evaluate_file(sensors, tmp / "sensors-model", stest, "river-hst")))
        _print(rows[-1])
    return {"rows": rows}


def _print(r: dict[str, Any]) -> None:
    lstm, hst = r["lstm"], r["river_hst"]
    print(
        f"  {r['data']:<45} LSTM PR-AUC {lstm['pr_auc']:.3f}, incident recall {lstm['incident_recall']:.3f}, "
        f"{lstm['false_alerts_per_10k']:.2f} false alerts/10k | River HST PR-AUC {hst['pr_auc']:.3f}, "
        f"incident recall {hst['incident_recall']:.3f}",
        flush=True,
    )
