"""Train a model folder from a JSONL file of (mostly) normal events.

    result = train_from_file(settings, "cards.jsonl", Path("models/default"), log=print)

Steps: validate every event; keep label == 0 when labels exist; split streams (seeded) into
train / early-stopping / calibration; fit the categorical embeddings (if any) and the
normalisation on the train streams only; featurise;
train with truncated BPTT over chunks of `chunk_length` events, carrying (h, c) across a stream's
chunks; stop early on the held-out loss; score the calibration streams with the streaming scorer
and set the threshold; save model.keras + metadata.json (+ training.png).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from detector.config import Settings
from detector.dataset import Dataset, featurize, load_events, score_events
from detector.embedding import bucket_labels, fit_embeddings
from detector.evidence import Evidence, fit_evidence
from detector.exceptions import DataError
from detector.features import FeatureSpec
from detector.model import build_model, keras_env, lstm_layers, make_metadata, save_artifact, weights_of
from detector.scoring import BatchScores, LstmWeights, Normalizer, StreamingScorer, table_for
from detector.threshold import calibrate
from simulators.output import writable_dir

# Floor on a feature's mean squared error (normalised units) when weighting errors: at most 10x.
ERROR_FLOOR = 0.1
# Training data below these sizes is refused with one line, before any training.
MIN_EVENTS = 100
MIN_STREAMS = 3


def _batches(seqs: list[np.ndarray], batch: int, rng: np.random.Generator | None) -> list[list[np.ndarray]]:
    """Streams grouped by similar length (less padding); group order shuffled when rng given."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    groups = [[seqs[i] for i in order[k : k + batch]] for k in range(0, len(order), batch)]
    if rng is not None:
        rng.shuffle(groups)  # type: ignore[arg-type]
    return groups


def _pack(group: list[np.ndarray], window: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded inputs (B, L, F), targets (B, L, W+1, F) and their mask (B, L, W+1).

    Target row t holds the stream's last W vectors up to t (the reconstruction) and then the
    vector at t+1 (the next-event prediction head); positions before the stream's start, after
    its end, or in padding are masked out.
    """
    b, nf = len(group), group[0].shape[1]
    length = -(-max(len(s) for s in group) // chunk) * chunk
    z = np.zeros((b, length + window, nf), dtype=np.float32)
    lens = np.array([len(s) for s in group])
    for i, s in enumerate(group):
        z[i, window - 1 : window - 1 + len(s)] = s
    win = np.lib.stride_tricks.sliding_window_view(z, window + 1, axis=1)  # (B, L, F, W+1)
    target = np.ascontiguousarray(win.transpose(0, 1, 3, 2))
    t = np.arange(length)[:, None]
    j = np.arange(window + 1)[None, :]
    src = t - (window - 1) + j  # event index each target slot refers to
    mask = (src >= 0)[None] & (src[None] < lens[:, None, None]) & (t[None] < lens[:, None, None])
    return z[:, window - 1 : window - 1 + length], target, mask.astype(np.float32)


class _Trainer:
    """Truncated BPTT with (h, c) carried across a stream's chunks. A stream's first chunk starts
    from a learned initial state (two trainable vectors, the scorer's state for a new stream), so
    a stream's first events are reconstructed from what a typical stream's start looks like
    rather than from zeros."""

    def __init__(self, model: Any, window: int, n_features: int, lr: float) -> None:
        keras = keras_env()
        import tensorflow as tf

        self.model, self.w, self.nf = model, window, n_features
        n_layers = len(lstm_layers(model))
        decoder = model.get_layer("decoder")
        # h and c travel as every layer's state side by side (B, layers * units), as in the scorer.
        self.state_size = model.get_layer("lstm").units * n_layers
        self.h0 = tf.Variable(tf.zeros((self.state_size,)), name="initial_h")
        self.c0 = tf.Variable(tf.zeros((self.state_size,)), name="initial_c")
        variables = [*model.trainable_variables, self.h0, self.c0]
        self.opt = keras.optimizers.Adam(learning_rate=lr, clipnorm=1.0)
        spec = [
            tf.TensorSpec((None, None, n_features), tf.float32),
            tf.TensorSpec((None, None, window + 1, n_features), tf.float32),
            tf.TensorSpec((None, None, window + 1), tf.float32),
            tf.TensorSpec((None, self.state_size), tf.float32),
            tf.TensorSpec((None, self.state_size), tf.float32),
            tf.TensorSpec((), tf.float32),
        ]

        def loss_of(x: Any, tgt: Any, mask: Any, h0: Any, c0: Any, fresh: Any, training: bool) -> Any:
            # fresh = 1 on a stream's first chunk: its state is the learned one (gradients reach it).
            h0 = fresh * (h0 * 0.0 + self.h0) + (1.0 - fresh) * h0
            c0 = fresh * (c0 * 0.0 + self.c0) + (1.0 - fresh) * c0
            hs, cs = tf.split(h0, n_layers, axis=1), tf.split(c0, n_layers, axis=1)
            y, *states = model([x, *(t for pair in zip(hs, cs, strict=True) for t in pair)], training=training)
            h, c = tf.concat(states[0::2], axis=1), tf.concat(states[1::2], axis=1)
            y = tf.reshape(y, tf.shape(tgt))
            se = tf.square(y - tgt) * mask[..., None]
            # The prediction head also learns each stream's first event from the initial state, so
            # a new stream's first event is scored by both heads (it used to get reconstruction only).
            first = decoder(hs[-1])[:, -n_features:]
            se_first = fresh * tf.reduce_sum(tf.square(first - x[:, 0]))
            n_first = fresh * tf.cast(tf.shape(x)[0] * n_features, tf.float32)
            return tf.reduce_sum(se) + se_first, tf.reduce_sum(mask) * n_features + n_first, h, c

        @tf.function(input_signature=spec)
        def train_step(x: Any, tgt: Any, mask: Any, h0: Any, c0: Any, fresh: Any) -> Any:
            with tf.GradientTape() as tape:
                s, n, h, c = loss_of(x, tgt, mask, h0, c0, fresh, True)
                loss = s / tf.maximum(n, 1.0)
            grads = tape.gradient(loss, variables)
            self.opt.apply_gradients(zip(grads, variables, strict=True))
            return s, n, h, c

        @tf.function(input_signature=spec)
        def eval_step(x: Any, tgt: Any, mask: Any, h0: Any, c0: Any, fresh: Any) -> Any:
            return loss_of(x, tgt, mask, h0, c0, fresh, False)

        self.train_step, self.eval_step = train_step, eval_step

    def initial_state(self) -> dict[str, list[float]]:
        return {"h": self.h0.numpy().tolist(), "c": self.c0.numpy().tolist()}

    def run(
        self,
        groups: list[list[np.ndarray]],
        chunk: int,
        train: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> float:
        """Mean loss over the groups (batches of streams); `progress(done, total)` after each."""
        step = self.train_step if train else self.eval_step
        total, count = 0.0, 0.0
        for i, g in enumerate(groups):
            x, tgt, mask = _pack(g, self.w, chunk)
            h = np.zeros((len(g), self.state_size), np.float32)
            c = np.zeros_like(h)
            for k in range(0, x.shape[1], chunk):
                sl = slice(k, k + chunk)
                s, n, h, c = step(x[:, sl], tgt[:, sl], mask[:, sl], h, c, np.float32(k == 0))
                total += float(s)
                count += float(n)
            if progress is not None:
                progress(i + 1, len(groups))
        return total / max(count, 1.0)


def _split_streams(ds: Dataset, frac: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    streams = list(ds.streams().values())
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(streams))
    n_hold = max(2, int(len(streams) * frac))
    hold = [streams[i] for i in perm[:n_hold]]
    train = [streams[i] for i in perm[n_hold:]]
    return train, hold[: len(hold) // 2], hold[len(hold) // 2 :]


def _fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def train_from_file(
    settings: Settings,
    data: Path,
    out: Path,
    log: Callable[[str], None] = print,
    epochs: int | None = None,
    seed: int | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
) -> dict[str, Any]:
    """Train, calibrate and save a model folder. `log` gets a line per step and epoch;
    `progress(epoch, epochs, batches done, batches)` is called after each training batch."""
    mc = settings.model
    seed = mc.seed if seed is None else seed
    epochs = mc.epochs if epochs is None else epochs
    spec = FeatureSpec.from_config(settings.features)
    t0 = time.monotonic()
    ds = load_events(data, spec, settings.runtime.max_event_bytes)
    labels = ds.labels()
    if labels is not None:
        ds = Dataset([e for e, lab in zip(ds.events, labels, strict=True) if lab == 0], ds.invalid)
    if len(ds.events) < MIN_EVENTS:
        raise DataError(f"{data}: {len(ds.events)} usable normal events ({ds.skipped()}); need at least {MIN_EVENTS}")
    n_streams = len({e.stream_id for e in ds.events})
    if n_streams < MIN_STREAMS:
        raise DataError(
            f"{data}: {n_streams} streams; training needs at least {MIN_STREAMS} (whole streams are held out "
            "for early stopping and threshold calibration)"
        )
    log(
        f"loaded {len(ds.events)} normal events ({sum(ds.invalid.values())} invalid skipped) "
        f"in {time.monotonic() - t0:.1f}s"
    )
    train_idx, val_idx, cal_idx = _split_streams(ds, mc.validation_split, seed)
    if sum(max(len(ix) - mc.warmup_events, 0) for ix in cal_idx) == 0:
        raise DataError(
            f"{data}: the {len(cal_idx)} calibration streams have no event past their first {mc.warmup_events} "
            "(model.warmup_events): the threshold needs longer streams"
        )
    writable_dir(out)  # before the epochs, not after them
    train_events = [ds.events[i] for i in np.sort(np.concatenate(train_idx))]
    embeddings = fit_embeddings(spec, train_events)
    spec = spec.with_embeddings(embeddings)
    median_step = spec.fit_median_step(train_events)
    spec = spec.with_median_step(median_step)
    if embeddings:
        log(f"embeddings of {', '.join(embeddings)} fitted on the training streams")
    raw = featurize(spec, ds.events)
    norm = Normalizer.fit(raw[np.concatenate(train_idx)], spec.one_hot_columns())
    z = norm.apply(raw)
    seqs = lambda idx: [z[i] for i in idx]  # noqa: E731
    model = build_model(spec.n_features, mc.units, mc.window, seed, mc.layers)
    trainer = _Trainer(model, mc.window, spec.n_features, mc.learning_rate)
    rng = np.random.default_rng(seed)
    history: list[tuple[float, float]] = []
    best, best_weights, best_init, waited = np.inf, model.get_weights(), trainer.initial_state(), 0
    val_groups = _batches(seqs(val_idx), mc.batch_size, None)
    for epoch in range(1, epochs + 1):
        te = time.monotonic()
        bar = (lambda done, total, e=epoch: progress(e, epochs, done, total)) if progress else None
        tl = trainer.run(_batches(seqs(train_idx), mc.batch_size, rng), mc.chunk_length, train=True, progress=bar)
        vl = trainer.run(val_groups, mc.chunk_length, train=False)
        history.append((tl, vl))
        mark = ""
        if vl < best - 1e-6:
            best, best_weights, best_init, waited, mark = vl, model.get_weights(), trainer.initial_state(), 0, " *"
        else:
            waited += 1
        log(f"epoch {epoch}/{epochs}  loss {tl:.4f}  val_loss {vl:.4f}  {time.monotonic() - te:.1f}s{mark}")
        if waited >= mc.patience:
            log(f"early stop: no improvement for {mc.patience} epochs")
            break
    model.set_weights(best_weights)
    weights = weights_of(model, best_init)
    events_of = lambda idx: sorted((ds.events[i] for ix in idx for i in ix), key=lambda e: e.ts)  # noqa: E731
    error_weights = None
    if mc.error_weighting == "per_feature":
        error_weights = fit_error_weights(weights, norm, spec, settings, events_of(val_idx))
    evidence = None
    if mc.evidence_seconds > 0:
        held_out = _scored(
            weights, norm, spec, settings, events_of(val_idx), mc.prediction_weight, error_weights, keep_residuals=True
        )
        evidence = fit_stream_evidence(held_out, spec.n_features, mc.evidence_seconds)
        if evidence is None:
            log("evidence off: too few held-out events to fit it (the score is each event's error)")
    scores = score_offline(weights, norm, spec, settings, events_of(cal_idx), error_weights, evidence)
    threshold = calibrate(scores, mc.target_false_alarm_rate, mc.threshold_method, mc.critical_multiplier)
    log(f"threshold {threshold.value:.4f} ({threshold.method}, {threshold.n_calibration} calibration events)")
    meta = make_metadata(
        model,
        spec,
        norm,
        threshold,
        mc.window,
        {
            "prediction_weight": mc.prediction_weight,
            "initial_state": best_init,
            "embeddings": {k: v.tolist() for k, v in embeddings.items()} or None,
            "bucket_labels": bucket_labels(spec, train_events) or None,
            "error_weights": None if error_weights is None else error_weights.tolist(),
            "evidence": None if evidence is None else evidence.to_dict(),
            "median_step": median_step,
            "training": {
                "data_fingerprint": _fingerprint(Path(data)),
                "events": len(ds.events),
                "seed": seed,
                "epochs_run": len(history),
                "history": [{"loss": a, "val_loss": b} for a, b in history],
                "best_val_loss": float(best),
                "seconds": round(time.monotonic() - t0, 1),
                "model_config": mc.model_dump(mode="json"),
            },
        },
    )
    save_artifact(model, meta, out)
    _plot(history, out / "training.png")
    log(f"saved model {meta['version']} to {out} in {time.monotonic() - t0:.1f}s")
    return meta


def score_offline(
    weights: LstmWeights,
    norm: Normalizer,
    spec: FeatureSpec,
    settings: Settings,
    events: list[Any],
    error_weights: np.ndarray | None,
    evidence: Evidence | None = None,
) -> np.ndarray:
    """Scores of the non-warming events (time-ordered) through the streaming scorer."""
    mc = settings.model
    r = score_events(
        events,
        weights,
        norm,
        spec,
        mc.window,
        mc.warmup_events,
        mc.prediction_weight,
        threshold=np.inf,
        error_weights=error_weights,
        evidence=evidence,
    )
    return r.score[~r.warming]


def fit_stream_evidence(batches: Iterable[BatchScores], n_features: int, tau: float) -> Evidence | None:
    """The evidence statistics from the non-warming events of normal held-out streams, scored
    with residuals kept (None when there are too few of them to estimate a covariance)."""
    errors, residuals = [], []
    for r in batches:
        assert r.residual is not None
        errors.append(r.error[~r.warming])
        residuals.append(r.residual[~r.warming])
    err = np.concatenate(errors) if errors else np.zeros(0, np.float32)
    if len(err) < 4 * n_features:
        return None
    return fit_evidence(err, np.concatenate(residuals), tau)


def _scored(
    weights: LstmWeights,
    norm: Normalizer,
    spec: FeatureSpec,
    settings: Settings,
    events: list[Any],
    alpha: float,
    error_weights: np.ndarray | None,
    keep_residuals: bool = False,
) -> Iterator[BatchScores]:
    """The streaming scorer over time-ordered `events` in batches of 4,096, on a fresh table."""
    mc = settings.model
    table = table_for(spec, max(len({e.stream_id for e in events}), 1), weights.state_size, mc.window)
    scorer = StreamingScorer(
        weights,
        norm,
        spec,
        table,
        mc.window,
        mc.warmup_events,
        alpha,
        error_weights=error_weights,
        keep_residuals=keep_residuals,
    )
    for k in range(0, len(events), 4096):
        yield scorer.score_batch(events[k : k + 4096], now=0.0)


def fit_error_weights(
    weights: LstmWeights, norm: Normalizer, spec: FeatureSpec, settings: Settings, events: list[Any]
) -> np.ndarray:
    """(2, F): 1 / each feature's mean squared error on normal held-out streams, for the
    reconstruction head and the prediction head (floored, so a feature that never varied in
    training cannot get an unbounded weight)."""
    out = np.ones((2, spec.n_features), np.float32)
    for head, alpha in ((0, 0.0), (1, 1.0)):
        errs = []
        for r in _scored(weights, norm, spec, settings, events, alpha, None):
            errs.append(r.feature_error[~r.warming])
        mean = np.concatenate(errs).mean(axis=0) if errs else np.ones(spec.n_features)
        out[head] = 1.0 / np.maximum(mean, ERROR_FLOOR)
    return out


def _plot(history: list[tuple[float, float]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is a convenience; training does not depend on it
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = range(1, len(history) + 1)
    ax.plot(ep, [h[0] for h in history], label="train")
    ax.plot(ep, [h[1] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("masked MSE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
