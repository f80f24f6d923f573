"""The key property: the streaming scorer equals the Keras model run offline over each stream,
whatever the batch size and the interleaving of streams."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.config import Settings
from detector.core.features import FeatureSpec
from detector.core.scorer import lstm_scorer
from detector.core.scoring import StreamingScorer, table_for
from detector.offline.dataset import featurize, load_events
from detector.offline.model import Artifact, keras_env, load_artifact
from tests.helpers import lstm_scored


@pytest.fixture(scope="module")
def art(model_dir: Path, small_settings: Settings) -> Artifact:
    return load_artifact(model_dir, FeatureSpec(small_settings.features))


@pytest.fixture(scope="module")
def events(test_file: Path, small_settings: Settings) -> list:
    ds = load_events(test_file, FeatureSpec(small_settings.features))
    keep = {f"card-{i:06d}" for i in range(12)}
    return [e for e in ds.events if e.stream_id in keep][:600]


def keras_scores(art: Artifact, spec: FeatureSpec, events: list, warmup: int) -> np.ndarray:
    """The reference: the saved Keras model over each whole stream, errors computed in NumPy."""
    return keras_errors(art, spec, events)[0]


def keras_errors(art: Artifact, spec: FeatureSpec, events: list) -> tuple[np.ndarray, np.ndarray]:
    """Each event's error and its (weighted) prediction residual, from the Keras model."""
    keras = keras_env()
    model = keras.saving.load_model(Path(art.metadata["_dir"]) / "model.keras", safe_mode=True, compile=False)
    raw = featurize(art.bind(spec), events)
    z = art.norm.apply(raw)
    w, nf, a = art.window, spec.n_features, art.prediction_weight
    ew = np.ones((2, nf)) if art.error_weights is None else art.error_weights
    out = np.zeros(len(events))
    residuals = np.zeros((len(events), nf))
    streams: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        streams.setdefault(e.stream_id, []).append(i)
    # The learned state a new stream starts from, split per layer as the Keras inputs take it.
    n = art.weights.layers
    h0, c0 = np.split(art.weights.h0[None], n, axis=1), np.split(art.weights.c0[None], n, axis=1)
    # The prediction of a stream's first event: the decoder on the initial state's top layer.
    first = np.asarray(model.get_layer("decoder")(h0[-1]))[0, w * nf :]
    for idx in streams.values():
        x = z[idx][None]
        y, *_ = model([x, *(a for pair in zip(h0, c0, strict=True) for a in pair)])
        y = np.asarray(y)[0].reshape(len(idx), w + 1, nf)
        for t in range(len(idx)):
            lo = max(0, t - w + 1)
            target = z[idx][lo : t + 1]
            rec = y[t, w - len(target) : w]
            rec_err = np.square(rec - target).sum(axis=0) / len(target)
            residuals[idx[t]] = ((y[t - 1, w] if t > 0 else first) - z[idx][t]) * np.sqrt(ew[1])
            pred_err = np.square(residuals[idx[t]])
            out[idx[t]] = ((1 - a) * rec_err * ew[0] + a * pred_err).sum() / nf
    return out, residuals


def evidence_reference(art: Artifact, events: list, warmup: int) -> np.ndarray:
    """detector.core.evidence written out event by event from the Keras errors, in plain Python: each
    part's tail probability, Fisher's combination, the allowance, the decay."""
    ev = art.evidence
    assert ev is not None
    errors, residuals = art.metadata["_keras"]
    raw = featurize(art.metadata["_spec"], events)
    out = np.zeros(len(events))
    acc: dict[str, tuple[float, float, int]] = {}  # stream -> (evidence, last ts, events seen)
    for i, e in enumerate(events):
        prev, last, seen = acc.get(e.stream_id, (0.0, e.ts, 0))
        d = (residuals[i] - ev.mean) @ ev.whiten
        parts = [
            float(ev.error_tail.neg_log_sf(np.array([errors[i]]))[0]),
            float(ev.whitened_tail.neg_log_sf(np.array([float(d @ d)]))[0]),
        ]
        if ev.profile is not None and ev.profile_tail is not None:
            parts.append(float(ev.profile_tail.neg_log_sf(ev.profile.score(raw[i : i + 1]))[0]))
        total = sum(parts)
        series = sum(total**k / math.factorial(k) for k in range(len(parts)))
        surprise = max(max(total - math.log(series), 0.0) - ev.allowance, 0.0)
        value = prev * math.exp(-max(e.ts - last, 0.0) / ev.tau) + (surprise if seen + 1 > warmup else 0.0)
        acc[e.stream_id] = (value, e.ts, seen + 1)
        out[i] = value
    return out


@pytest.fixture(scope="module")
def reference(art: Artifact, events: list, small_settings: Settings, model_dir: Path) -> np.ndarray:
    art.metadata["_dir"] = str(model_dir)
    return keras_scores(art, art.bind(FeatureSpec(small_settings.features)), events, small_settings.model.warmup_events)


def stream_scores(art: Artifact, spec: FeatureSpec, events: list, batch: int, evidence: bool = False) -> np.ndarray:
    r = lstm_scored(
        art,
        spec,
        events,
        3,
        np.inf,
        batch=batch,
        error_weights=art.error_weights,
        evidence=art.evidence if evidence else None,
    )
    return r.score


@pytest.mark.parametrize("batch", [1, 7, 64, 4096])
def test_streaming_equals_keras_offline(
    art: Artifact, events: list, reference: np.ndarray, small_settings: Settings, batch: int
) -> None:
    got = stream_scores(art, art.bind(FeatureSpec(small_settings.features)), events, batch)
    scale = max(float(np.median(reference)), 1e-6)
    assert np.max(np.abs(got - reference)) / scale <= 1e-5


@pytest.fixture(scope="module")
def evidence_ref(art: Artifact, events: list, small_settings: Settings, model_dir: Path) -> np.ndarray:
    art.metadata["_dir"] = str(model_dir)
    art.metadata["_keras"] = keras_errors(art, art.bind(FeatureSpec(small_settings.features)), events)
    art.metadata["_spec"] = art.bind(FeatureSpec(small_settings.features))
    return evidence_reference(art, events, 3)


@pytest.mark.parametrize("batch", [1, 7, 4096])
def test_stream_evidence_equals_the_keras_reference(
    art: Artifact, events: list, evidence_ref: np.ndarray, small_settings: Settings, batch: int
) -> None:
    """The score a model with evidence publishes: each stream's decayed sum of surprises."""
    got = stream_scores(art, art.bind(FeatureSpec(small_settings.features)), events, batch, evidence=True)
    assert art.evidence is not None and art.evidence.tau == small_settings.model.evidence_seconds
    assert np.count_nonzero(evidence_ref) > len(events) // 4  # a real signal, not all zeros
    # In nats (thresholds are ~10): the empirical body of a part's tail is a step function, so an
    # error that float32 and float64 put on either side of a stored quantile moves -ln p by
    # ln((k + 1) / k) ~ 1e-3; everything else agrees to float32 rounding.
    diff = np.abs(got - evidence_ref)
    assert np.max(diff) <= 1e-2
    assert np.mean(diff <= 1e-5 * np.maximum(evidence_ref, 1.0)) > 0.99


@pytest.fixture(scope="module")
def novelty_settings(small_settings: Settings) -> Settings:
    """Per-stream novelty features and per-feature error weights on: their equivalence too."""
    data = small_settings.model_dump()
    data["features"]["novelty"] = ["country", "merchant_id"]
    data["model"]["error_weighting"] = "per_feature"
    return Settings(**data)


@pytest.fixture(scope="module")
def novelty_art(novelty_settings: Settings, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    from detector.offline.training import train_from_file

    out = tmp_path_factory.mktemp("novelty") / "m"
    train_from_file(novelty_settings, train_file, out, log=lambda _m: None)
    art = load_artifact(out, FeatureSpec(novelty_settings.features))
    art.metadata["_dir"] = str(out)
    return art


@pytest.mark.parametrize("batch", [1, 64])
def test_novelty_and_error_weights_stream_equals_keras_offline(
    novelty_art: Artifact, events: list, novelty_settings: Settings, test_file: Path, batch: int
) -> None:
    spec = novelty_art.bind(FeatureSpec(novelty_settings.features))
    ew = novelty_art.error_weights
    assert ew is not None and ew.shape == (2, spec.n_features)
    assert ew.min() > 0 and ew.max() > 1.5  # some feature is weighted up, none past the floor
    assert ew.max() <= 10.0 + 1e-4
    evs = load_events(test_file, spec).events[: len(events)]
    ref = keras_scores(novelty_art, spec, evs, 3)
    got = stream_scores(novelty_art, spec, evs, batch)
    assert np.max(np.abs(got - ref)) / max(float(np.median(ref)), 1e-6) <= 1e-5


@pytest.fixture(scope="module")
def stacked_art(small_settings: Settings, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifact:
    from detector.offline.training import train_from_file

    data = small_settings.model_dump()
    data["model"].update(layers=2, epochs=1)
    out = tmp_path_factory.mktemp("stacked") / "m"
    train_from_file(Settings(**data), train_file, out, log=lambda _m: None)
    art = load_artifact(out, FeatureSpec(small_settings.features))
    art.metadata["_dir"] = str(out)
    return art


@pytest.mark.parametrize("batch", [1, 64])
def test_two_layer_model_stream_equals_keras_offline(
    stacked_art: Artifact, events: list, small_settings: Settings, batch: int
) -> None:
    """`model.layers: 2`: each stream carries both layers' (h, c); the decoder reads the top one."""
    spec = stacked_art.bind(FeatureSpec(small_settings.features))
    w = stacked_art.weights
    assert w.layers == 2 and w.state_size == 2 * w.units and stacked_art.metadata["layers"] == 2
    ref = keras_scores(stacked_art, spec, events, 3)
    got = stream_scores(stacked_art, spec, events, batch)
    assert np.max(np.abs(got - ref)) / max(float(np.median(ref)), 1e-6) <= 1e-5


@pytest.fixture(scope="module")
def embedded(small_settings: Settings, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """Country and merchant id as learned embeddings instead of one-hot blocks."""
    from detector.offline.training import train_from_file

    data = small_settings.model_dump()
    data["features"]["categorical"] = [
        {"name": "channel", "buckets": 4},
        {"name": "country", "buckets": 32, "embedding": 3},
        {"name": "merchant_id", "buckets": 256, "embedding": 4},
    ]
    data["model"].update(epochs=1)
    s = Settings(**data)
    out = tmp_path_factory.mktemp("embedded") / "m"
    train_from_file(s, train_file, out, log=lambda _m: None)
    art = load_artifact(out, FeatureSpec(s.features))
    art.metadata["_dir"] = str(out)
    return s, art


@pytest.mark.parametrize("batch", [1, 64])
def test_embedded_fields_stream_equals_keras_offline(embedded: tuple, test_file: Path, batch: int) -> None:
    s, art = embedded
    spec = art.bind(FeatureSpec(s.features))
    assert set(art.embeddings) == {"country", "merchant_id"}
    assert art.embeddings["merchant_id"].shape == (256, 4) and np.abs(art.embeddings["country"]).sum() > 0
    evs = [e for e in load_events(test_file, spec).events if e.stream_id < "card-000012"][:600]
    ref = keras_scores(art, spec, evs, 3)
    got = stream_scores(art, spec, evs, batch)
    assert np.max(np.abs(got - ref)) / max(float(np.median(ref)), 1e-6) <= 1e-5


def test_a_model_with_embeddings_refuses_a_config_without_them(embedded: tuple, small_settings: Settings) -> None:
    from detector.exceptions import ModelError

    s, art = embedded
    with pytest.raises(ModelError, match=r"features\.categorical"):
        load_artifact(Path(art.metadata["_dir"]), FeatureSpec(small_settings.features))
    spec = FeatureSpec(s.features)
    table = table_for(spec, 4, art.weights.state_size, art.window)  # the layout the factory builds
    with pytest.raises(ValueError, match="no tables"):
        StreamingScorer(art.weights, art.norm, spec, table, art.window, 3)
    StreamingScorer(art.weights, art.norm, art.bind(spec), table, art.window, 3)  # bound: fine


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 50))
def test_any_interleaving_gives_the_same_scores(
    art: Artifact,
    events: list,
    reference: np.ndarray,
    evidence_ref: np.ndarray,
    small_settings: Settings,
    seed: int,
    batch: int,
) -> None:
    # Shuffle the global order but keep each stream's own order: the scores must not move.
    rng = np.random.default_rng(seed)
    by_stream: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        by_stream.setdefault(e.stream_id, []).append(i)
    keys = [k for k, v in by_stream.items() for _ in v]
    rng.shuffle(keys)
    cursor = dict.fromkeys(by_stream, 0)
    order = []
    for k in keys:
        order.append(by_stream[k][cursor[k]])
        cursor[k] += 1
    spec = art.bind(FeatureSpec(small_settings.features))
    got = stream_scores(art, spec, [events[i] for i in order], batch)
    scale = max(float(np.median(reference)), 1e-6)
    assert np.max(np.abs(got - reference[order])) / scale <= 1e-5
    with_evidence = stream_scores(art, spec, [events[i] for i in order], batch, evidence=True)
    ref = evidence_ref
    assert np.max(np.abs(with_evidence - ref[order])) <= 1e-2  # nats, as in the test above


def test_numpy_step_matches_keras_lstm_cell(art: Artifact, small_settings: Settings) -> None:
    keras = keras_env()
    spec = art.bind(FeatureSpec(small_settings.features))
    u, nf = art.weights.units, spec.n_features
    cell = keras.layers.LSTMCell(u)
    cell.build((None, nf))
    cell.set_weights([art.weights.kernel, art.weights.recurrent, art.weights.bias])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, nf)).astype(np.float32)
    h = rng.standard_normal((5, u)).astype(np.float32)
    c = rng.standard_normal((5, u)).astype(np.float32)
    kh, (_, kc) = cell(x, [h, c])
    scorer = lstm_scorer(art.weights, art.norm, spec, art.window, 3, 10)
    nh, nc = scorer.step(x, h, c)
    assert np.max(np.abs(nh - np.asarray(kh))) < 1e-5
    assert np.max(np.abs(nc - np.asarray(kc))) < 1e-5


def test_score_many_does_not_mutate_its_input(art: Artifact, events: list, small_settings: Settings) -> None:
    spec = art.bind(FeatureSpec(small_settings.features))
    before = [(e.stream_id, e.ts, e.numeric, e.buckets, dict(e.record)) for e in events[:50]]
    stream_scores(art, spec, events[:50], 16)
    assert before == [(e.stream_id, e.ts, e.numeric, e.buckets, dict(e.record)) for e in events[:50]]


def test_warming_events_are_marked(art: Artifact, events: list, small_settings: Settings) -> None:
    spec = art.bind(FeatureSpec(small_settings.features))
    r = lstm_scored(art, spec, events, 3, -1.0)
    first_three: dict[str, int] = {}
    for i, e in enumerate(events):
        n = first_three.get(e.stream_id, 0)
        assert bool(r.warming[i]) == (n < 3)
        assert bool(r.alert[i]) == (n >= 3)  # threshold -1: everything not warming alerts
        first_three[e.stream_id] = n + 1


def test_absurd_values_score_finite(art: Artifact, small_settings: Settings) -> None:
    spec = art.bind(FeatureSpec(small_settings.features))
    import orjson

    evs = [
        spec.parse(
            orjson.dumps(
                {
                    "event_id": str(i),
                    "stream_id": "s",
                    "ts": 1e9 + i * 1e6,
                    "amount": a,
                    "channel": "pos",
                    "country": "??",
                    "merchant_category": "x",
                }
            )
        )
        for i, a in enumerate([1.0, 1e300, 0.0, 1e-300, 5.0])
    ]
    r = lstm_scored(art, spec, evs, 0, np.inf)
    assert np.all(np.isfinite(r.score))


def test_scores_do_not_change_when_label_fields_are_removed(
    art: Artifact, test_file: Path, small_settings: Settings
) -> None:
    import orjson

    from detector.jsonl import read_jsonl

    spec = art.bind(FeatureSpec(small_settings.features))
    lines = list(read_jsonl(test_file))
    with_labels = [spec.parse(x) for x in lines]
    stripped = []
    for x in lines:
        d = orjson.loads(x)
        for k in small_settings.features.label_fields:
            d.pop(k, None)
        stripped.append(spec.parse(orjson.dumps(d)))
    a = lstm_scored(art, spec, with_labels, 3, np.inf)
    b = lstm_scored(art, spec, stripped, 3, np.inf)
    assert np.array_equal(a.score, b.score)
    assert sum(orjson.loads(x)["label"] for x in lines) > 0  # the file really had fraud labels
