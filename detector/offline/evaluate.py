"""Offline commands over a JSONL file: `detector score` and `detector evaluate`.

n = score_file(settings, Path("models/default"), Path("test.jsonl"), "scores.jsonl")
report = evaluate_file(settings, Path("models/default"), Path("test.jsonl"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from detector.config import FeaturesConfig, Settings
from detector.core.budget import budget_for
from detector.core.evidence import DRIVER_OF_PART
from detector.core.explain import Explainer
from detector.core.features import FeatureSpec
from detector.exceptions import DataError, ModelError
from detector.jsonl import writable_dir, write_jsonl
from detector.offline.dataset import Dataset, Scored, load_events, score_events, stream_count
from detector.offline.measures import average_precision, evaluate
from detector.offline.model import Artifact, load_artifact
from detector.offline.scorers import artifact_scorer

# The metrics every evaluation report carries (with --json, these keys at the top level).
REPORT_KEYS = (
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "pr_auc",
    "incident_recall",
    "mean_delay_events",
    "mean_delay_seconds",
    "false_alerts_per_10k",
)


def model_spec(art: Artifact) -> FeatureSpec:
    """The feature spec the model was trained with (its folder carries it): offline scoring
    needs no copy of the training config."""
    try:
        cfg = FeaturesConfig(**art.metadata["features"]["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model {art.version}: unreadable feature spec in its metadata ({exc})") from None
    return FeatureSpec.from_config(cfg)


def score_dataset(
    settings: Settings, model: Path, data: Path, explain: bool = False
) -> tuple[Artifact, Dataset, Scored]:
    """Load the model and the file, score every event in file order as the daemon would (with
    `explain`, each alert's top features too)."""
    art = load_artifact(model)
    spec = model_spec(art)
    ds = load_events(data, spec, settings.runtime.max_event_bytes)
    scorer = artifact_scorer(art, spec, settings.model.warmup_events, stream_count(ds.events), explain=explain)
    r = score_events(
        ds.events,
        scorer,
        art.threshold.value,
        explainer=Explainer(scorer.spec, art.bucket_labels) if explain else None,
        budget=budget_for(art.threshold.value, settings.alerts.budget_per_10k),
    )
    return art, ds, r


def score_file(settings: Settings, model: Path, data: Path, out: str) -> int:
    """One JSON line per valid input event, in input order; an alert's line also carries its
    severity and top 3 features, as the daemon's alert does."""
    art, ds, r = score_dataset(settings, model, data, explain=True)

    def row(i: int, e: Any) -> dict[str, Any]:
        out = {
            "event_id": e.event_id,
            "stream_id": e.stream_id,
            "score": round(float(r.score[i]), 6),
            "threshold": round(float(r.limit[i]), 6),
            "alert": bool(r.alert[i]),
            "warming": bool(r.warming[i]),
        }
        if r.alert[i]:
            out["severity"] = art.threshold.severity(float(r.score[i]))
            out["top_features"] = r.top_features[i]
            if r.driver is not None:
                out["driven_by"] = DRIVER_OF_PART[int(r.driver[i])]
        return out

    return write_jsonl((row(i, e) for i, e in enumerate(ds.events)), out)


def _training_events(art: Artifact, settings: Settings, train_data: Path | None) -> list[Any]:
    """The normal events a baseline is fitted on: `train_data`, or the model's own training file
    (its metadata names it) when that is still there."""
    path = train_data or (Path(art.metadata["training"]["data"]) if art.metadata["training"].get("data") else None)
    if path is None or not path.is_file():
        raise DataError("--baseline needs the model's training data: --train FILE")
    ds = load_events(path, model_spec(art), settings.runtime.max_event_bytes)
    labels = ds.labels()
    return ds.events if labels is None else [e for e, lab in zip(ds.events, labels, strict=True) if lab == 0]


def evaluate_file(
    settings: Settings,
    model: Path,
    data: Path,
    baseline: str | None = None,
    plots: Path | None = None,
    train_data: Path | None = None,
) -> dict[str, Any]:
    """The report; with `plots`, also a PR curve and score timelines (with the baseline's curve)."""
    if plots is not None:
        writable_dir(plots)  # before the scoring, not after
    art, ds, r = score_dataset(settings, model, data)
    labels = ds.labels()
    if labels is None:
        raise DataError(f"{data}: events lack the 'label' field; evaluation needs labelled data")
    ts = np.array([e.ts for e in ds.events])
    streams = [e.stream_id for e in ds.events]
    scores = np.where(r.warming, 0.0, r.score)
    report = evaluate(scores, r.alert, labels, ds.field("incident_id"), streams, ts)
    report["model_version"] = art.version
    report["threshold"] = art.threshold.value
    report["invalid_events"] = sum(ds.invalid.values())
    by_type: dict[str, dict[str, Any]] = {}
    types = ds.field("fraud_type")
    if all(t is None for t in types):  # the sensor domain labels faults
        types = ds.field("fault_type")
    for t in sorted({x for x in types if x}):
        idx = np.array([x == t for x in types])
        incs = {i for i, x in zip(ds.field("incident_id"), types, strict=True) if x == t}
        caught = {i for i, x, a in zip(ds.field("incident_id"), types, r.alert, strict=True) if x == t and a}
        by_type[t] = {
            "events": int(idx.sum()),
            "event_recall": float(r.alert[idx].mean()),
            "incidents": len(incs),
            "incidents_caught": len(caught),
            # What this type costs the ranking: PR-AUC over every other event.
            "pr_auc_without": average_precision(scores[~idx], labels[~idx]),
        }
    report["by_fraud_type"] = by_type
    base_scores = None
    if baseline is not None:
        from detector.offline.baselines.compare import baseline_report, paired_bootstrap

        train_events = _training_events(art, settings, train_data)
        spec = art.bind(model_spec(art))
        b, base_scores = baseline_report(
            baseline,
            spec,
            train_events,
            ds.events,
            labels,
            ds.field("incident_id"),
            streams,
            ts,
            art.threshold.target_rate,
            settings.model.seed,
        )
        diff, lo, hi = paired_bootstrap(labels, scores, base_scores, streams, settings.model.seed)
        b["pr_auc_difference"] = {"lstm_minus_baseline": diff, "ci95": [lo, hi], "tie": bool(lo <= 0 <= hi)}
        report["baseline"] = b
    if plots is not None:
        from detector.offline.plots import Events, Run, write_plots

        runs = [Run(f"LSTM (PR-AUC {report['pr_auc']:.3f})", scores, r.alert, art.threshold.value)]
        if base_scores is not None:
            b = report["baseline"]
            runs.append(
                Run(
                    f"{b['name']} (PR-AUC {b['pr_auc']:.3f})", base_scores, base_scores > b["threshold"], b["threshold"]
                )
            )
        written = write_plots(plots, Events(labels, ds.field("incident_id"), streams, ts), runs)
        report["plots"] = [str(p) for p in written]
    return report


def format_report(rep: dict[str, Any]) -> str:
    lines = [
        f"model {rep['model_version']}  threshold {rep['threshold']:.4f}  events {rep['events']}  "
        f"alerts {rep['alerts']}"
    ]
    keys = REPORT_KEYS
    base = rep.get("baseline")
    if base:
        lines.append(f"  {'':<22} {'lstm':>8} {base['name']:>10}")
        lines += [f"  {k:<22} {rep[k]:>8.4f} {base[k]:>10.4f}" for k in keys]
        d = base["pr_auc_difference"]
        verdict = "a tie" if d["tie"] else ("LSTM better" if d["lstm_minus_baseline"] > 0 else "baseline better")
        lines.append(
            f"  PR-AUC lstm - {base['name']}: {d['lstm_minus_baseline']:+.4f}, 95% interval "
            f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] over streams: {verdict}"
        )
    else:
        lines += [f"  {k:<22} {rep[k]:.4f}" for k in keys]
    for t, v in rep.get("by_fraud_type", {}).items():
        lines.append(
            f"  {t:<22} incidents {v['incidents_caught']}/{v['incidents']}  event recall {v['event_recall']:.2f}"
            f"  PR-AUC without it {v['pr_auc_without']:.3f}"
        )
    return "\n".join(lines)
