"""Learned embeddings of categorical fields with many values, fitted on the training streams.

    tables = fit_embeddings(spec, events)          # {field: (buckets, dimensions) float32}
    spec = spec.with_embeddings(tables)            # base_matrix fills the embedding columns

Two values are close when the same streams use them: the table factorises the positive
pointwise mutual information of the field's values co-occurring within a stream (each stream
weighted equally, a value with itself not counted), keeping the eigenvectors of the largest
eigenvalues scaled by their square roots. This is the closed form of what word2vec-style training
approximates (Levy & Goldberg, NeurIPS 2014). It is fitted once, before the LSTM, and then fixed:
an embedding trained jointly with an autoencoder that must reconstruct it can shrink every value
to one point and make the reconstruction error vanish. A bucket never seen in training gets the
zero vector. Deterministic: no randomness, each vector's sign fixed by its largest component.
"""

from __future__ import annotations

import numpy as np

from detector.core.features import FeatureSpec, ParsedEvent


def fit_embeddings(spec: FeatureSpec, events: list[ParsedEvent]) -> dict[str, np.ndarray]:
    """One table per embedded field of `spec`, from the (training) events."""
    if not spec.embedded:
        return {}
    ids: dict[str, int] = {}
    streams = np.array([ids.setdefault(e.stream_id, len(ids)) for e in events], dtype=np.int64)
    b = spec.buckets_of(events)
    out = {}
    for i, _, dim in spec.embedded:
        c = spec.categorical[i]
        out[c.name] = embed(co_occurrence(streams, b[:, i], c.buckets), dim)
    return out


def bucket_labels(spec: FeatureSpec, events: list[ParsedEvent]) -> dict[str, dict[str, str]]:
    """Per categorical field: each seen bucket's most frequent value (ties: the first in sort
    order), so an explanation can name a value instead of a bucket."""
    out = {}
    for i, c in enumerate(spec.categorical):
        name = c.name
        counts: dict[tuple[int, str], int] = {}
        for e in events:
            key = (e.buckets[i], str(e.record.get(name)))
            counts[key] = counts.get(key, 0) + 1
        best: dict[int, tuple[int, str]] = {}
        for (b, v), n in sorted(counts.items()):
            if b not in best or n > best[b][0]:
                best[b] = (n, v)
        out[name] = {str(b): v for b, (_, v) in sorted(best.items())}
    return out


def co_occurrence(streams: np.ndarray, values: np.ndarray, n_values: int) -> np.ndarray:
    """(n_values, n_values): sum over streams of p_s(a) * p_s(b), a != b, where p_s is the share of
    the stream's events with each value."""
    keys, counts = np.unique(streams * n_values + values, return_counts=True)
    s, v = keys // n_values, keys % n_values
    totals = np.bincount(s, weights=counts)
    p = counts / totals[s]
    # Every ordered pair of distinct values within each stream: item j pairs with the items of its
    # stream, which are contiguous in the sorted keys.
    first = np.searchsorted(s, s, side="left")
    size = np.bincount(s)[s]
    a = np.repeat(np.arange(len(s)), size)
    b = np.repeat(first, size) + (np.arange(len(a)) - np.repeat(np.cumsum(size) - size, size))
    keep = a != b
    a, b = a[keep], b[keep]
    m = np.bincount(v[a] * n_values + v[b], weights=p[a] * p[b], minlength=n_values * n_values)
    return m.reshape(n_values, n_values)


def embed(m: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim) float32 rows of the top eigenvectors of PPMI(m), scaled by sqrt(eigenvalue)."""
    n = m.shape[0]
    out = np.zeros((n, dim), dtype=np.float32)
    seen = np.flatnonzero(m.sum(axis=1) > 0)
    if len(seen) == 0:
        return out
    sub = m[np.ix_(seen, seen)]
    row = sub.sum(axis=1)
    with np.errstate(divide="ignore"):
        pmi = np.log(sub * sub.sum()) - np.log(row)[:, None] - np.log(row)[None, :]
    ppmi = np.where(sub > 0, np.maximum(pmi, 0.0), 0.0)
    lam, vec = np.linalg.eigh((ppmi + ppmi.T) / 2)
    k = min(dim, len(seen))
    lam, vec = lam[::-1][:k], vec[:, ::-1][:, :k]
    sign = np.sign(vec[np.abs(vec).argmax(axis=0), np.arange(k)])
    out[seen, :k] = vec * sign * np.sqrt(np.maximum(lam, 0.0))
    return out
