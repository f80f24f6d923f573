"""The streaming scorer: one LSTM step per event for its stream, batched across streams. Pure NumPy.

    scorer = lstm_scorer(weights, norm, spec, window=16, warmup=3, max_streams=100_000)  # detector.core.scorer
    out = scorer.score_many(parsed_events, now=time.time())
    out.score[i], out.warming[i], out.feature_error[i]   # explanations: detector.core.explain

For each event: fill its per-stream features, normalise, compare the vector with what the
stream's state before it predicted (prediction head), run one LSTM step from the stream's (h, c),
append the vector to the stream's ring of the last W vectors, decode the new h into a
reconstruction of those W vectors (reconstruction head), and take the event's error
    (1 - a) * mean squared reconstruction error over the filled positions + a * prediction error
with a = `prediction_weight`, stored in the model metadata because the threshold depends on it.
With `evidence` (a model trained with it), the score is the stream's evidence: its decayed sum of
surprises (detector.core.evidence); without, the event's error.
Several events of one stream in a batch are processed in order, in rounds
(round r holds every stream's r-th event of the batch), so any batching and interleaving gives
the same scores as scoring one event at a time.

Why NumPy and not a tf.function: on this 2-core machine the batched NumPy step measured ~2x
the tf.function at batch 1,024 (measured on this machine kind when the scorer was written);
the weights are Keras's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.core.evidence import EVIDENCE_STATE, Evidence
from detector.core.features import FeatureSpec, ParsedEvent
from detector.core.state import StreamTable, code_groups

# Normalised features are clipped to this many standard deviations: one absurd value (1e30) must
# not produce inf or NaN scores, and 10 sigma is already far past any alert threshold.
Z_CLIP = 10.0
# The scale of a column held constant (Normalizer.without).
HELD_CONSTANT = 1e30


@dataclass(frozen=True)
class Normalizer:
    mean: np.ndarray  # (F,)
    std: np.ndarray  # (F,)

    def apply(self, x: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """Normalised `x`, whose columns are the vector's `cols` (all by default)."""
        z = (x - self.mean[cols]) / self.std[cols]
        np.copyto(z, 0.0, where=np.isnan(z))  # unknown per-stream features (first event) = expected
        return np.clip(z, -Z_CLIP, Z_CLIP, out=z).astype(np.float32, copy=False)

    def without(self, columns: list[int]) -> Normalizer:
        """These columns always normalise to 0 (their training data cannot say what is normal):
        a scale of 1e30 maps any finite value to 0."""
        std = self.std.copy()
        std[columns] = HELD_CONSTANT
        return Normalizer(self.mean, std)

    def invert(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    @classmethod
    def fit(cls, x: np.ndarray, keep_raw: np.ndarray | None = None) -> Normalizer:
        """Mean/std per column; columns flagged in `keep_raw` (one-hot blocks) stay 0/1."""
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0)
        # A floor on std: a near-constant training column would otherwise turn any change into a
        # 1e6-sigma outlier.
        std = np.maximum(std, 0.05)
        if keep_raw is not None:
            # One-hot columns are not standardised: a rare bucket would become a 20-sigma "outlier"
            # and the unpredictable choice among a card's usual shops would drown every other feature.
            mean = np.where(keep_raw, 0.0, mean)
            std = np.where(keep_raw, 1.0, std)
        return cls(np.nan_to_num(mean).astype(np.float32), std.astype(np.float32))


@dataclass(frozen=True)
class LstmWeights:
    """Keras LSTM + Dense decoder weights (gate order i, f, c, o, as Keras stores them)."""

    kernel: np.ndarray  # (F, 4U)
    recurrent: np.ndarray  # (U, 4U)
    bias: np.ndarray  # (4U,)
    dec_kernel: np.ndarray  # (U, W*F)
    dec_bias: np.ndarray  # (W*F,)
    # The learned initial state (layers * U,) a new stream starts from; None: zeros (models saved
    # before it).
    h0: np.ndarray | None = None
    c0: np.ndarray | None = None
    # Layers 2.. of a stacked LSTM: (kernel (U, 4U), recurrent (U, 4U), bias (4U,)) each; the
    # decoder reads the top layer's h.
    stack: tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...] = ()

    @property
    def units(self) -> int:
        """Units of each layer."""
        return int(self.recurrent.shape[0])

    @property
    def layers(self) -> int:
        return 1 + len(self.stack)

    @property
    def state_size(self) -> int:
        """Floats of h (and of c) per stream: every layer's."""
        return self.units * self.layers


@dataclass
class BatchScores:
    score: np.ndarray  # (n,) float32, mean squared reconstruction error
    warming: np.ndarray  # (n,) bool: the stream's first warmup_events, never alerted
    feature_error: np.ndarray  # (n, F) each feature's error (its mean is the score); 0 unless explained
    observed: np.ndarray  # (n, F) raw feature values of the event
    expected: np.ndarray  # (n, F) the model's reconstruction of the event, in raw units
    slots: np.ndarray  # (n,) each event's slot in the stream table
    error: np.ndarray  # (n,) the event's own error (the score too, unless the model keeps evidence)
    residual: np.ndarray | None = None  # (n, F) prediction residuals, with keep_residuals only
    # (n,) the part that drove each event's surprise (detector.core.evidence.PART_NAMES), with evidence
    driver: np.ndarray | None = None


class StreamingScorer:
    """The LSTM model behind the `detector.core.scorer.Scorer` seam."""

    # Each stream's scores depend on its own events only (its own slot of the table).
    independent_streams = True

    def __init__(
        self,
        weights: LstmWeights,
        norm: Normalizer,
        spec: FeatureSpec,
        table: StreamTable,
        window: int,
        warmup_events: int,
        prediction_weight: float = 0.5,
        explain_above: float = -np.inf,
        error_weights: np.ndarray | None = None,
        evidence: Evidence | None = None,
        keep_residuals: bool = False,
    ) -> None:
        u = weights.units
        # With evidence, the score is the stream's decayed sum of surprises (detector.core.evidence);
        # without, the event's own error.
        self.evidence, self.keep_residuals = evidence, keep_residuals
        self.alpha = prediction_weight
        # Events scoring above this get per-feature errors (for alert explanations); the daemon
        # sets it to the alert threshold, so the common case skips that work.
        self.explain_above = explain_above
        self.spec, self.norm, self.table = spec, norm, table
        self.window, self.warmup = window, warmup_events
        self.n_features = spec.n_features
        # One fused matmul per step: [x, h] @ [kernel; recurrent]. The sigmoid gates (i, f, o)
        # are pre-scaled by 0.5 so a single tanh serves all four: sigmoid(z) = 0.5*tanh(z/2)+0.5.
        scale = np.ones(4 * u, dtype=np.float32)
        scale[: 2 * u] = 0.5
        scale[3 * u :] = 0.5
        # Per layer: the fused, pre-scaled [kernel; recurrent] and bias.
        self._layers = [
            ((np.concatenate([k, r]) * scale).astype(np.float32), (b * scale).astype(np.float32))
            for k, r, b in ((weights.kernel, weights.recurrent, weights.bias), *weights.stack)
        ]
        dk, db, wf = (
            weights.dec_kernel.astype(np.float32),
            weights.dec_bias.astype(np.float32),
            window * spec.n_features,
        )
        self._dk_rec, self._db_rec = np.ascontiguousarray(dk[:, :wf]), db[:wf].copy()
        self._dk_pred, self._db_pred = np.ascontiguousarray(dk[:, wf:]), db[wf:].copy()
        self._u, size = u, weights.state_size
        self._top = size - u
        if table.units != size:
            raise ValueError(f"the stream table holds {table.units} state floats; the model needs {size}")
        # A learned initial state was trained to predict a stream's first event too.
        self._learned_start = weights.h0 is not None
        self._h0 = np.zeros(size, np.float32) if weights.h0 is None else weights.h0.astype(np.float32)
        self._c0 = np.zeros(size, np.float32) if weights.c0 is None else weights.c0.astype(np.float32)
        self._ar = np.arange(window)
        # Per-feature error weights (2, F): reconstruction, prediction. Each feature's squared error
        # is divided by its mean on normal validation data, so a feature that is normally
        # predictable (a card's country) counts more than one that never is (the hour of a shop).
        ew = np.ones((2, spec.n_features), np.float32) if error_weights is None else np.asarray(error_weights)
        self._sw_rec = np.tile(np.sqrt(ew[0]).astype(np.float32), window)
        self._sw_pred = np.sqrt(ew[1]).astype(np.float32)
        self._weighted = error_weights is not None
        # The ring holds the dense columns, each embedded field's bucket and, per group of one-hot
        # blocks, one code; those parts of the reconstruction target are rows of small tables: the
        # normalised embedding table, the concatenated one-hot vectors of each code.
        if (table.categorical, table.embedded, table.n_dense) != _layout(spec):
            raise ValueError("the stream table's layout does not match the feature spec")
        if spec.embeddings is None:
            raise ValueError(
                "the feature spec has embedded fields but no tables: spec.with_embeddings(artifact.embeddings)"
            )
        self._dense = table.n_dense
        emb = zip(spec.embedded, spec.embeddings, strict=True)
        # An embedding's target rows: its table normalised as `norm.apply` maps those columns.
        lookups = [norm.apply(tab, slice(off, off + tab.shape[1])) for (_, off, _), tab in emb]
        groups = code_groups(table.categorical)
        lookups += [_one_hot_table(g) for g in groups]
        self._n_codes = len(lookups)
        self._runs = _runs(lookups)
        self._groups = [(g, _strides(g)) for g in groups]
        self._emb_index = [i for i, _, _ in spec.embedded]

    def step(self, z: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step of every layer: h and c hold the layers' states side by side (n, layers * U)."""
        if len(self._layers) == 1:
            return self._cell(z, h, c, *self._layers[0])
        u, hs, cs = self._u, [], []
        for k, (w, b) in enumerate(self._layers):
            z, c_k = self._cell(z, h[:, k * u : (k + 1) * u], c[:, k * u : (k + 1) * u], w, b)
            hs.append(z)
            cs.append(c_k)
        return np.concatenate(hs, axis=1), np.concatenate(cs, axis=1)

    def _cell(
        self, z: np.ndarray, h: np.ndarray, c: np.ndarray, w: np.ndarray, b: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        u = self._u
        g = np.tanh(np.concatenate([z, h], axis=1) @ w + b)
        i = 0.5 * g[:, :u] + 0.5
        f = 0.5 * g[:, u : 2 * u] + 0.5
        o = 0.5 * g[:, 3 * u :] + 0.5
        c = f * c + i * g[:, 2 * u : 3 * u]
        return o * np.tanh(c), c

    def learn_many(self, events: list[ParsedEvent]) -> None:
        """Nothing to learn online: the weights are trained offline (detector.offline.training),
        and each stream's state learns its stream as it is scored."""

    def score_many(
        self, events: list[ParsedEvent], now: float = 0.0, partitions: np.ndarray | None = None
    ) -> BatchScores:
        n, nf = len(events), self.n_features
        ts = np.array([e.ts for e in events], dtype=np.float64)
        b = self.spec.buckets_of(events)
        x = self.spec.base_matrix(events, ts, b)
        slots = self.table.slots_for([e.stream_id for e in events], now, partitions)
        score = np.zeros(n, dtype=np.float32)
        warming = np.zeros(n, dtype=bool)
        feat = np.zeros((n, nf), dtype=np.float32)
        expected = np.zeros((n, nf), dtype=np.float32)
        error = np.zeros(n, dtype=np.float32)
        residual = np.zeros((n, nf), dtype=np.float32) if self.keep_residuals else None
        driver = np.zeros(n, dtype=np.int8) if self.evidence is not None else None
        marks = self.spec.marks(events) if self.spec.n_novelty else None
        cats = np.zeros((n, self._n_codes), np.uint16)
        k, j, oh = 0, len(self.spec.embedded), b[:, self.spec.one_hot_index] if self.spec.embedded else b
        cats[:, :j] = b[:, self._emb_index]
        for g, strides in self._groups:
            cats[:, j] = oh[:, k : k + len(g)] @ strides
            k, j = k + len(g), j + 1
        for rows in _rounds(slots):
            self._score_round(
                rows, slots[rows], x, ts, marks, cats, score, warming, feat, expected, error, residual, driver
            )
        return BatchScores(score, warming, feat, x, self.norm.invert(expected), slots, error, residual, driver)

    def _score_round(
        self,
        rows: np.ndarray,
        s: np.ndarray,
        x: np.ndarray,
        ts: np.ndarray,
        marks: np.ndarray | None,
        cats: np.ndarray,
        score: np.ndarray,
        warming: np.ndarray,
        feat: np.ndarray,
        expected: np.ndarray,
        error: np.ndarray,
        residual: np.ndarray | None,
        driver: np.ndarray | None,
    ) -> None:
        t, w, nf, a = self.table, self.window, self.n_features, self.alpha
        n = len(rows)
        count = t.count[s]
        xr = x[rows]
        mk = marks[rows] if marks is not None else None
        view = t.view(s)
        elapsed = ts[rows] - view["last_ts"]  # since the stream's previous event (huge for a new one)
        t.store(s, self.spec.derive(xr, ts[rows], view, count > 0, mk))
        x[rows] = xr
        z = self.norm.apply(xr)
        h_prev, c_prev = t.h[s], t.c[s]
        fresh = count == 0
        if fresh.any():  # a new stream starts from the learned initial state
            h_prev[fresh], c_prev[fresh] = self._h0, self._c0
        # Prediction head: what the stream's state before this event expected it to be.
        top = slice(self._top, None)  # the decoder reads the top layer's h
        pred = h_prev[:, top] @ self._dk_pred + self._db_pred
        pred_d = pred - z
        if self._weighted:
            pred_d *= self._sw_pred
        if not self._learned_start:
            pred_d[fresh] = 0.0  # zeros predict nothing: the first event gets reconstruction only
        h, c = self.step(z, h_prev, c_prev)
        t.h[s], t.c[s] = h, c
        # The ring is kept in time order (oldest .. newest): shift left, append the new vector.
        nd = self._dense
        ring = t.ring[s]
        ring[:, :-1] = ring[:, 1:]
        ring[:, -1] = z[:, :nd]
        t.ring[s] = ring
        if self._n_codes:
            ring_cat = t.ring_cat[s]
            ring_cat[:, :-1] = ring_cat[:, 1:]
            ring_cat[:, -1] = cats[rows]
            t.ring_cat[s] = ring_cat
        count = count + 1
        t.count[s] = count
        # Reconstruction head: the last W vectors from the new state, compared where filled.
        target = [ring]
        for lo, hi, tab, offsets in self._runs:  # one gather per run of same-width lookups
            target.append(tab.take(ring_cat[:, :, lo:hi] + offsets, axis=0).reshape(n, w, -1))
        rec_d = h[:, top] @ self._dk_rec + self._db_rec
        rec_d -= (np.concatenate(target, axis=2) if len(target) > 1 else ring).reshape(n, w * nf)
        if self._weighted:
            rec_d *= self._sw_rec
        n_valid = np.minimum(count, w)
        partial = np.flatnonzero(n_valid < w)
        if len(partial):
            mask = self._ar >= (w - n_valid[partial])[:, None]
            rec_d.reshape(n, w, nf)[partial] *= mask[:, :, None]
        rec = np.einsum("ij,ij->i", rec_d, rec_d) / n_valid
        prd = np.einsum("ij,ij->i", pred_d, pred_d)
        sc = ((1.0 - a) * rec + a * prd) / nf
        error[rows] = sc
        warm = count <= self.warmup
        if residual is not None:
            residual[rows] = pred_d
        if self.evidence is not None and driver is not None:
            before = {k: getattr(t, k)[s] for k in EVIDENCE_STATE}
            sc, after, driver[rows] = self.evidence.accumulate(sc, pred_d, xr, elapsed, before, count - 1, warm)
            for k, v in after.items():
                getattr(t, k)[s] = v
        score[rows] = sc
        # Per-feature errors only where an explanation will be asked for (alerts are rare).
        hot = np.flatnonzero(sc > self.explain_above)
        if len(hot):
            per_rec = np.square(rec_d[hot].reshape(len(hot), w, nf)).sum(axis=1) / n_valid[hot, None]
            feat[rows[hot]] = (1.0 - a) * per_rec + a * np.square(pred_d[hot])
        expected[rows] = pred if a > 0 else (h[:, top] @ self._dk_rec + self._db_rec)[:, -nf:]
        warming[rows] = warm


def table_for(
    spec: FeatureSpec, max_streams: int, state_size: int, window: int, idle_ttl_seconds: float = float("inf")
) -> StreamTable:
    """A stream table laid out for `spec` (dense columns, embedded buckets, one-hot codes)."""
    categorical, embedded, _ = _layout(spec)
    return StreamTable(
        max_streams,
        state_size,
        window,
        spec.n_features,
        idle_ttl_seconds,
        spec.sketch_words,
        categorical,
        embedded,
        spec.n_numeric,
    )


def _layout(spec: FeatureSpec) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(one-hot block sizes, embedding dimensions, dense columns) of the ring for `spec`."""
    blocks, dims = spec.one_hot_blocks(), tuple(d for _, _, d in spec.embedded)
    return blocks, dims, spec.n_features - sum(blocks) - sum(dims)


def _runs(lookups: list[np.ndarray]) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """Consecutive lookup tables of the same width stacked into one, (first, end, stacked table,
    each one's row offset): one gather serves the run (210 against 282 us for the default
    features' three lookups at 1,024 events, measured)."""
    out: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    lo = 0
    for j in range(1, len(lookups) + 1):
        if j == len(lookups) or lookups[j].shape[1] != lookups[lo].shape[1]:
            sizes = [t.shape[0] for t in lookups[lo:j]]
            offsets = np.cumsum([0, *sizes[:-1]]).astype(np.intp)
            out.append((lo, j, np.concatenate(lookups[lo:j]), offsets))
            lo = j
    return out


def _strides(group: tuple[int, ...]) -> np.ndarray:
    return np.cumprod((1, *group[:-1])).astype(np.int64)


def _one_hot_table(group: tuple[int, ...]) -> np.ndarray:
    """Row `code` = the concatenated one-hot vectors of the group's buckets that the code encodes."""
    codes = np.arange(int(np.prod(group)))
    idx = (codes[:, None] // _strides(group)[None, :]) % np.array(group)[None, :]
    out = np.zeros((len(codes), sum(group)), np.float32)
    off = np.cumsum((0, *group[:-1]))
    out[codes[:, None], off[None, :] + idx] = 1.0
    return out


def _rounds(slots: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped so that round r holds each slot's r-th occurrence, in batch order."""
    n = len(slots)
    order = np.argsort(slots, kind="stable")
    ss = slots[order]
    first = np.ones(n, dtype=bool)
    first[1:] = ss[1:] != ss[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - start
    top = int(rank.max()) if n else -1
    if top == 0:
        return [np.arange(n)]
    return [np.flatnonzero(rank == r) for r in range(top + 1)]
