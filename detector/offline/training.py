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
from detector.core.embedding import bucket_labels, fit_embeddings
from detector.core.evidence import Evidence, fit_evidence
from detector.core.features import FeatureSpec
from detector.core.profile import Profile, fit_profile
from detector.core.scorer import lstm_scorer
from detector.core.scoring import BatchScores, LstmWeights, Normalizer
from detector.exceptions import DataError
from detector.jsonl import writable_dir
from detector.offline.calibration import calibrate_threshold
from detector.offline.dataset import Dataset, featurize, load_events, stream_count
from detector.offline.holdout import held_out_events, held_out_groups, split_data
from detector.offline.model import build_model, keras_env, lstm_layers, make_metadata, save_artifact, weights_of

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


def _pack(
    group: list[np.ndarray], window: int, chunk: int, starts: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded inputs (B, L, F), targets (B, L, W+1, F) and their mask (B, L, W+1); with `starts`,
    rows of each stream before its start are masked out too (a time split's held-out tail).

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
    if starts is not None:
        mask &= t[None] >= np.asarray(starts)[:, None, None]
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
        starts: list[list[int]] | None = None,
    ) -> float:
        """Mean loss over the groups (batches of streams); `progress(done, total)` after each;
        `starts`: per group, the row of each stream from which its loss counts."""
        step = self.train_step if train else self.eval_step
        total, count = 0.0, 0.0
        for i, g in enumerate(groups):
            x, tgt, mask = _pack(g, self.w, chunk, None if starts is None else starts[i])
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
    """Train, calibrate and save a model folder from a JSONL file (`train`)."""
    t0 = time.monotonic()
    spec = FeatureSpec.from_config(settings.features)
    ds = load_events(data, spec, settings.runtime.max_event_bytes)
    labels = ds.labels()
    if labels is not None:
        ds = Dataset([e for e, lab in zip(ds.events, labels, strict=True) if lab == 0], ds.invalid)
    source = {"data": str(Path(data).resolve()), "data_fingerprint": _fingerprint(Path(data))}
    return train(settings, ds, out, source, str(data), log, epochs, seed, progress, t0)


def train(
    settings: Settings,
    ds: Dataset,
    out: Path,
    source: dict[str, Any],
    data: str,
    log: Callable[[str], None] = print,
    epochs: int | None = None,
    seed: int | None = None,
    progress: Callable[[int, int, int, int], None] | None = None,
    t0: float | None = None,
) -> dict[str, Any]:
    """Train, calibrate and save a model folder on the normal events of `ds` (`data` names them in
    messages; `source` says where they came from, in the metadata's `training`). `log` gets a line
    per step and epoch; `progress(epoch, epochs, batches done, batches)` is called after each
    training batch."""
    mc = settings.model
    seed = mc.seed if seed is None else seed
    epochs = mc.epochs if epochs is None else epochs
    spec = FeatureSpec.from_config(settings.features)
    t0 = time.monotonic() if t0 is None else t0
    if len(ds.events) < MIN_EVENTS:
        raise DataError(f"{data}: {len(ds.events)} usable normal events ({ds.skipped()}); need at least {MIN_EVENTS}")
    split = split_data(ds, mc.validation_split, seed, MIN_STREAMS)
    if split.kind == "time":
        need = _min_single_stream_events(mc.window, mc.validation_split, mc.warmup_events)
        short = min(len(r) for r, _ in split.cal)
        if short < need:
            raise DataError(
                f"{data}: a stream of {short} events; training on fewer than {MIN_STREAMS} streams splits each in "
                f"time and needs at least {need} events per stream (model.window {mc.window}, "
                f"validation_split {mc.validation_split})"
            )
    log(
        f"loaded {len(ds.events)} normal events ({sum(ds.invalid.values())} invalid skipped) "
        f"in {time.monotonic() - t0:.1f}s; held out by {split.kind}"
    )
    counted = sum(max(len(r) - max(k, mc.warmup_events), 0) for r, k in split.cal)
    if counted == 0:
        raise DataError(
            f"{data}: the {len(split.cal)} calibration streams have no event past their first {mc.warmup_events} "
            "(model.warmup_events): the threshold needs longer streams"
        )
    writable_dir(out)  # before the epochs, not after them
    train_rows = np.sort(np.concatenate(split.train))
    train_events = [ds.events[i] for i in train_rows]
    embeddings = fit_embeddings(spec, train_events)
    spec = spec.with_embeddings(embeddings)
    median_step = spec.fit_median_step(train_events)
    spec = spec.with_median_step(median_step)
    if embeddings:
        log(f"embeddings of {', '.join(embeddings)} fitted on the training streams")
    raw = featurize(spec, ds.events)
    norm = Normalizer.fit(raw[train_rows], spec.one_hot_columns())
    uncovered = uncovered_time_features(spec, np.array([e.ts for e in train_events]))
    relative_only = [i for i, f in enumerate(spec.numeric) if not f.absolute]
    if relative_only:
        norm = norm.without(relative_only)
    if uncovered:
        norm = norm.without(uncovered)
        log(
            "warning: training covers too short a time for "
            + ", ".join(sorted({spec.names[c].rsplit("_", 1)[0] for c in uncovered}))
            + ": those features are held constant (hour of day needs 2 days, day of week 14)"
        )
    z = norm.apply(raw)
    model = build_model(spec.n_features, mc.units, mc.window, seed, mc.layers)
    trainer = _Trainer(model, mc.window, spec.n_features, mc.learning_rate)
    rng = np.random.default_rng(seed)
    history: list[tuple[float, float]] = []
    best, best_weights, best_init, waited = np.inf, model.get_weights(), trainer.initial_state(), 0
    val_groups, val_starts = held_out_groups(z, split.val, mc.batch_size)
    train_seqs = [z[r] for r in split.train if len(r)]
    passes = _passes(train_seqs, mc.batch_size, mc.chunk_length, mc.min_steps, epochs)
    if passes > 1:
        log(f"small data: {passes} passes over it per epoch (model.min_steps {mc.min_steps} gradient steps)")
    for epoch in range(1, epochs + 1):
        te = time.monotonic()
        bar = (lambda done, total, e=epoch: progress(e, epochs, done, total)) if progress else None
        groups = [g for _ in range(passes) for g in _batches(train_seqs, mc.batch_size, rng)]
        tl = trainer.run(groups, mc.chunk_length, train=True, progress=bar)
        vl = trainer.run(val_groups, mc.chunk_length, train=False, starts=val_starts)
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
    error_weights = None
    val_events, val_mask = held_out_events(ds, split.val)
    if mc.error_weighting == "per_feature":
        error_weights = fit_error_weights(weights, norm, spec, settings, val_events, val_mask)
    evidence = None
    if mc.evidence_seconds > 0:
        profile = fit_profile(spec, raw[train_rows])
        constant = relative_only + uncovered
        held_out = _scored(
            weights, norm, spec, settings, val_events, mc.prediction_weight, error_weights, keep_residuals=True
        )
        evidence = fit_stream_evidence(held_out, val_mask, spec.n_features, mc, profile, constant)
        if evidence is None:
            log("evidence off: too few held-out events to fit it (the score is each event's error)")
    cal_events, cal_mask = held_out_events(ds, split.cal)
    threshold, drift = calibrate_threshold(
        weights, norm, spec, settings, cal_events, cal_mask, error_weights, evidence, seed
    )
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
            "drift_reference": drift,
            "median_step": median_step,
            "training": {
                **source,
                "events": len(ds.events),
                "held_out_by": split.kind,
                "time_features_held_constant": [spec.names[c] for c in uncovered],
                "seed": seed,
                "epochs_run": len(history),
                "passes_per_epoch": passes,
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


def _min_single_stream_events(window: int, frac: float, warmup: int) -> int:
    """Events a stream needs for a time split: a training part of 4 windows and held-out parts
    with 2 windows each past the warm-up."""
    return max(MIN_EVENTS, int(np.ceil(max(4 * window / (1.0 - frac), 2 * (2 * window + warmup) / frac))))


# Time features are held constant when training covers less than this many seconds: an hour-of-day
# pattern needs two days to be seen twice, a day-of-week pattern two weeks.
TIME_COVERAGE = {"hour": 2 * 86400.0, "dow": 14 * 86400.0}


def uncovered_time_features(spec: FeatureSpec, ts: np.ndarray) -> list[int]:
    """Columns of time features whose period the training timestamps do not cover."""
    span = float(ts.max() - ts.min()) if len(ts) else 0.0
    return [
        i
        for i, name in enumerate(spec.names)
        if name.split("_")[0] in TIME_COVERAGE and i >= spec.time_col and span < TIME_COVERAGE[name.split("_")[0]]
    ]


def _passes(seqs: list[np.ndarray], batch: int, chunk: int, min_steps: int, epochs: int) -> int:
    """Passes over the training data per epoch so that `epochs` of them take `min_steps` steps."""
    lengths = sorted(len(q) for q in seqs)
    steps = sum(-(-max(lengths[k : k + batch]) // chunk) for k in range(0, len(lengths), batch))
    return max(1, -(-min_steps // max(steps * epochs, 1)))


def fit_stream_evidence(
    batches: Iterable[BatchScores],
    counted: np.ndarray,
    n_features: int,
    mc: Any,
    profile: Profile | None,
    constant: list[int],
) -> Evidence | None:
    """The evidence statistics from the counted, non-warming events of normal held-out streams,
    scored with residuals kept (None when there are too few of them to estimate a covariance)."""
    errors, residuals, raws = [], [], []
    k = 0
    for r in batches:
        assert r.residual is not None
        use = ~r.warming & counted[k : k + len(r.score)]
        k += len(r.score)
        errors.append(r.error[use])
        residuals.append(r.residual[use])
        raws.append(r.observed[use])
    err = np.concatenate(errors) if errors else np.zeros(0, np.float32)
    if len(err) < max(4 * n_features, 20):
        return None
    return fit_evidence(
        err,
        np.concatenate(residuals),
        np.concatenate(raws),
        profile,
        mc.evidence_seconds,
        mc.evidence_per_event,
        constant,
        mc.combine,
        mc.likelihood_events,
    )


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
    scorer = lstm_scorer(
        weights,
        norm,
        spec,
        mc.window,
        mc.warmup_events,
        stream_count(events),
        alpha,
        error_weights=error_weights,
        keep_residuals=keep_residuals,
    )
    for k in range(0, len(events), 4096):
        yield scorer.score_many(events[k : k + 4096], now=0.0)


def fit_error_weights(
    weights: LstmWeights,
    norm: Normalizer,
    spec: FeatureSpec,
    settings: Settings,
    events: list[Any],
    counted: np.ndarray,
) -> np.ndarray:
    """(2, F): 1 / each feature's mean squared error on normal held-out streams, for the
    reconstruction head and the prediction head (floored, so a feature that never varied in
    training cannot get an unbounded weight)."""
    out = np.ones((2, spec.n_features), np.float32)
    for head, alpha in ((0, 0.0), (1, 1.0)):
        errs, k = [], 0
        for r in _scored(weights, norm, spec, settings, events, alpha, None):
            errs.append(r.feature_error[~r.warming & counted[k : k + len(r.score)]])
            k += len(r.score)
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
