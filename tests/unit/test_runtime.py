"""Process settings: one BLAS thread by default, and batch-sized buffers reused, not re-faulted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Scores 20 batches of 1,024 events and prints the minor page faults they took, and the BLAS
# threads setting; with "tune", detector.runtime.tune_process() runs first, as in the CLI.
PROBE = """
import os, resource, sys
if sys.argv[1] == "tune":
    from detector.runtime import tune_process
    tune_process()
import numpy as np
from bench.scoring import events, random_embeddings, random_weights
from detector.config import Settings
from detector.core.features import FeatureSpec
from detector.core.scorer import lstm_scorer
from detector.core.scoring import Normalizer
from detector.core.state import StreamTable
spec = random_embeddings(FeatureSpec(Settings().features), 5)
f = spec.n_features
norm = Normalizer(np.zeros(f, np.float32), np.ones(f, np.float32))
sc = lstm_scorer(random_weights(f, 32, 16, 1), norm, spec, 16, 3, 2000, 0.5, explain_above=np.inf)
evs = events(spec, 20480, 2000, 7)
sc.score_many(evs[:1024], 0.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range(0, len(evs), 1024):
    sc.score_many(evs[k : k + 1024], 0.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, os.environ.get("OPENBLAS_NUM_THREADS"))
"""


def _probe(mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    faults, threads = out.stdout.split()
    return int(faults), threads


def test_tuned_process_reuses_batch_buffers_and_uses_one_blas_thread() -> None:
    plain_faults, plain_threads = _probe("plain")
    tuned_faults, tuned_threads = _probe("tune")
    assert plain_threads == "None" and tuned_threads == "1"
    # Untuned, glibc maps each batch's temporaries afresh (~1,000 faults a batch measured here);
    # tuned, the freed ones are reused (~300 faults in all).
    assert plain_faults > 20 * 200
    assert tuned_faults < plain_faults / 10


def test_filtered_native_stderr_drops_only_the_noise(capfd: pytest.CaptureFixture[str]) -> None:
    from detector.runtime import filtered_native_stderr

    with filtered_native_stderr((b"noise",)):
        os.write(2, b"a noise line\nkept 1\n")
        # Native code writes to the descriptor, not to sys.stderr: a child process does the same.
        subprocess.run([sys.executable, "-c", "import os; os.write(2, b'kept 2\\nmore noise\\n')"], check=True)
    assert capfd.readouterr().err == "kept 1\nkept 2\n"
    with pytest.raises(ZeroDivisionError), filtered_native_stderr((b"noise",)):
        os.write(2, b"said before the error\n")
        _ = 1 / 0
    assert capfd.readouterr().err == "said before the error\n"


def test_loading_tensorflow_prints_nothing_to_stderr() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP")}
    code = "from detector.offline.model import keras_env; keras_env().layers.Dense(2)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stderr == ""
