"""Scoring core: our carried-state scorer against the alternatives a user would pick instead.

Same model size everywhere (default config: F=22 features, W=16, 32 LSTM units):
* ours: one LSTM step per event for its stream, batched across streams (NumPy, Keras weights);
* windowed AE, batched: an LSTM encoder / RepeatVector / LSTM decoder autoencoder that re-encodes
  each event's last W events (tf.function, batches of the same size);
* naive: per-event `model.predict` of that windowed AE (events capped, rate measured on them);
* River HalfSpaceTrees: `score_one` + `learn_one` per event on the same feature vector.
Also the physical bound: our FLOPs per event over this machine's float32 matmul rate.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any

import numpy as np
import orjson

from bench.common import rate, repeat
from detector.config import Settings
from detector.core.evidence import Evidence, fit_evidence
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.profile import fit_profile
from detector.core.scorer import lstm_scorer
from detector.core.scoring import LstmWeights, Normalizer


def events(spec: FeatureSpec, n: int, streams: int, seed: int) -> list[ParsedEvent]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, streams, n)
    cats, countries, chans = ["grocery", "fuel", "retail"], ["US", "DE", "FR"], ["pos", "ecom", "atm"]
    return [
        spec.parse(
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "stream_id": f"s{ids[i]}",
                    "ts": 1.7e9 + i,
                    "amount": float(rng.lognormal(3, 1)),
                    "channel": chans[i % 3],
                    "country": countries[i % 3],
                    "merchant_category": cats[i % 3],
                }
            )
        )
        for i in range(n)
    ]


def random_weights(f: int, u: int, w: int, seed: int) -> LstmWeights:
    rng = np.random.default_rng(seed)
    r = lambda *shape: np.asarray(rng.standard_normal(shape) * 0.1, np.float32)  # noqa: E731
    return LstmWeights(
        r(f, 4 * u), r(u, 4 * u), np.zeros(4 * u, np.float32), r(u, (w + 1) * f), np.zeros((w + 1) * f, np.float32)
    )


def random_embeddings(spec: FeatureSpec, seed: int) -> FeatureSpec:
    """`spec` bound to random tables for its embedded fields (as a trained model's would be)."""
    rng = np.random.default_rng(seed)
    tables = {
        spec.categorical[i].name: rng.standard_normal((spec.categorical[i].buckets, d)) for i, _, d in spec.embedded
    }
    return spec.with_embeddings(tables)


def random_evidence(spec: FeatureSpec, seed: int) -> Evidence:
    """Calibrated evidence of the right shapes (as a trained model's would be): tails of each
    part and the profile fitted on random normal data."""
    rng = np.random.default_rng(seed)
    f = spec.n_features
    residuals = rng.standard_normal((4096, f)).astype(np.float32)
    raw = rng.standard_normal((4096, f)).astype(np.float32)
    errors = np.square(residuals).mean(axis=1)
    return fit_evidence(errors, residuals, raw, fit_profile(spec, raw), 1800.0)


def flops_per_event(f: int, u: int, w: int) -> int:
    step = 2 * (f + u) * 4 * u + 10 * u  # fused gate matmul + gate arithmetic
    decode = 2 * u * (w + 1) * f  # reconstruction + prediction heads
    error = 3 * (w + 1) * f  # subtract, square, sum
    evidence = 2 * f * f + 3 * f  # whitened prediction residual and its square
    return step + decode + error + evidence


def windowed_flops_per_event(f: int, u: int, w: int) -> int:
    """The windowed AE's work per event: W encoder steps, W decoder steps, the dense output, the error."""
    encode = w * (2 * (f + u) * 4 * u + 10 * u)
    decode = w * (2 * (u + u) * 4 * u + 10 * u) + w * 2 * u * f
    return encode + decode + 3 * w * f


def matmul_gflops() -> float:
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    a @ a
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    return 10 * 2 * 1024**3 / (time.perf_counter() - t0) / 1e9


def ours(spec: FeatureSpec, evs: list[ParsedEvent], streams: int, batch: int, reps: int, cap: int) -> dict[str, Any]:
    f, u, w = spec.n_features, 32, 16
    wts = random_weights(f, u, w, 1)
    norm = Normalizer(np.zeros(f, np.float32), np.ones(f, np.float32))
    sc = lstm_scorer(
        wts, norm, spec, w, 3, max(streams, batch), 0.5, explain_above=np.inf, evidence=random_evidence(spec, 2)
    )
    warm = events(spec, streams * w, streams, 99)  # steady state: every stream already has W events
    for k in range(0, len(warm), 4096):
        sc.score_many(warm[k : k + 4096], 0.0)
    del warm  # 160,000-1,600,000 parsed events: not left for the cyclic collector to walk while timed
    gc.collect()
    run = evs[:cap]

    def go() -> None:
        # Each batch's result dropped as the daemon drops it (a list of all 200 results kept ~60 MB
        # of fresh arrays alive per repetition: new pages for every batch; 253,000 ev/s against
        # 358,000 dropped, measured side by side at 10,000 streams, batch 1,024).
        for k in range(0, len(run), batch):
            sc.score_many(run[k : k + batch], 0.0)

    def once() -> float:
        return rate(len(run), go)

    return repeat(once, reps)


def windowed_model(f: int, u: int, w: int) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    x = keras.Input((w, f))
    h = keras.layers.LSTM(u)(x)
    y = keras.layers.RepeatVector(w)(h)
    y = keras.layers.LSTM(u, return_sequences=True)(y)
    y = keras.layers.Dense(f)(y)
    return keras.Model(x, y)


def windowed_batched(f: int, w: int, batch: int, reps: int, n: int) -> dict[str, Any]:
    import tensorflow as tf

    model = windowed_model(f, 32, w)
    fn = tf.function(lambda x: tf.reduce_mean(tf.square(model(x) - x), axis=[1, 2]), reduce_retracing=True)
    xb = tf.constant(np.random.default_rng(0).standard_normal((batch, w, f)).astype(np.float32))

    def once() -> float:
        return rate(n, lambda: [fn(xb).numpy() for _ in range(max(n // batch, 1))])

    return repeat(once, reps)


def naive_predict(f: int, w: int, n: int) -> dict[str, Any]:
    model = windowed_model(f, 32, w)
    x = np.random.default_rng(0).standard_normal((1, w, f)).astype(np.float32)
    model.predict(x, verbose=0)
    return repeat(lambda: rate(n, lambda: [model.predict(x, verbose=0) for _ in range(n)]), 3, warmup=0)


def river_hst(spec: FeatureSpec, evs: list[ParsedEvent], n: int) -> dict[str, Any] | None:
    try:
        from river.anomaly import HalfSpaceTrees
    except ImportError:
        return None
    x = spec.base_matrix(evs[:n])
    x = np.nan_to_num(x)
    rows = [dict(enumerate(r.tolist())) for r in x]

    def once() -> float:
        hst = HalfSpaceTrees(seed=1)

        def go() -> None:
            for r in rows:
                hst.score_one(r)
                hst.learn_one(r)

        return rate(len(rows), go)

    return repeat(once, 3, warmup=0)


def run(smoke: bool = False) -> dict[str, Any]:
    spec = random_embeddings(FeatureSpec(Settings().features), 5)
    f, u, w = spec.n_features, 32, 16
    n = 20_000 if smoke else 200_000
    # 7 repetitions: on this shared 2-core VM single runs swing by +-30%; the median of 7 (and the
    # range) says more than the median of 3 did.
    reps = 1 if smoke else 7
    out: dict[str, Any] = {"features": f, "window": w, "units": u, "reps": reps, "ours": {}}
    for streams in (1_000,) if smoke else (10_000, 100_000):
        evs = events(spec, n, streams, 7)
        # The fixture (200,000 parsed events held at once) is the harness's, not the daemon's, which
        # holds one batch: kept out of the cyclic collector, as the daemon freezes its start-up heap.
        gc.collect()
        gc.freeze()
        for batch in (64, 1024) if smoke else (1, 64, 256, 1024, 4096):
            cap = min(n, 200 * batch if batch < 64 else n)  # batch 1: ~20k ev/s, cap the run length
            r = ours(spec, evs, streams, batch, reps, cap)
            out["ours"][f"{streams}/{batch}"] = r
            print(
                f"  ours       streams {streams:>7,}  batch {batch:>5}: {r['median']:>11,.0f} ev/s "
                f"(range {r['min']:,.0f}-{r['max']:,.0f})",
                flush=True,
            )
    out["windowed_batched_1024"] = windowed_batched(f, w, 1024, reps, 4096 if smoke else 40_960)
    print(f"  windowed AE, batched 1024:            {out['windowed_batched_1024']['median']:>11,.0f} ev/s")
    out["naive_predict"] = naive_predict(f, w, 20 if smoke else 200)
    out["naive_predict"]["note"] = "per-event model.predict on 200 events, rate extrapolated"
    print(f"  naive per-event model.predict:        {out['naive_predict']['median']:>11,.1f} ev/s")
    hst = river_hst(spec, evs, 2_000 if smoke else 20_000)
    if hst:
        out["river_hst"] = hst
        print(f"  River HalfSpaceTrees score+learn:     {hst['median']:>11,.0f} ev/s")
    key = "1000/1024" if smoke else "10000/1024"
    ref = out["ours"][key]["median"]
    fl, wfl = flops_per_event(f, u, w), windowed_flops_per_event(f, u, w)
    gf = matmul_gflops()
    bound = gf * 1e9 / fl
    out["headline"] = {
        "ours_10k_streams_batch_1024": ref,
        "flops_per_event": fl,
        "matmul_gflops": gf,
        "physical_bound_events_per_s": bound,
        "fraction_of_bound": ref / bound,
        "ratio_vs_windowed_batched": ref / out["windowed_batched_1024"]["median"],
        # The ratio at equal efficiency (FLOPs/s) of both: what the carried state saves in work.
        "windowed_flops_per_event": wfl,
        "flop_ratio_windowed_over_ours": wfl / fl,
        "windowed_fraction_of_bound": out["windowed_batched_1024"]["median"] * wfl / (gf * 1e9),
        "ratio_vs_naive_predict": ref / out["naive_predict"]["median"],
        "ratio_vs_river_hst": ref / hst["median"] if hst else None,
    }
    h = out["headline"]
    print(
        f"  FLOPs/event {fl:,}; float32 matmul {gf:.1f} GFLOP/s -> bound {bound:,.0f} ev/s; "
        f"ours = {h['fraction_of_bound']:.1%} of it"
    )
    print(
        f"  ours / windowed batched = {h['ratio_vs_windowed_batched']:.1f}x; ours / naive predict = "
        f"{h['ratio_vs_naive_predict']:,.0f}x" + (f"; ours / River HST = {h['ratio_vs_river_hst']:.1f}x" if hst else "")
    )
    print(
        f"  windowed AE: {h['windowed_flops_per_event']:,} FLOPs/event, {h['windowed_fraction_of_bound']:.1%} of the "
        f"bound; FLOP ratio windowed / ours = {h['flop_ratio_windowed_over_ours']:.1f}x (the speed ratio at equal "
        "efficiency)"
    )
    return out
