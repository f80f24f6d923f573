"""Process-wide settings the scorer's speed depends on; the CLI applies them before NumPy loads.

    tune_process()   # first thing in `detector` (and in `python -m bench`)

* One BLAS thread: the scorer's small matmuls ran 3-30x slower with two OpenBLAS threads on a
  2-core machine (measured when the scorer was written; `python -m bench --only scoring` runs
  with one). A value already in the environment wins.
* Freed batch buffers stay in the heap: glibc serves allocations over its mmap threshold (128 KiB
  at first, raised only by frees) with fresh pages, so each batch's 1.5 MB temporaries (the
  decoder output of 1,024 events) were page-faulted in anew: 162,000 minor faults against 72,000
  in a 1,140-batch run, and `h @ W + b` took 1.4 ms instead of 0.33.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import os
import sys
import tempfile
from collections.abc import Iterator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
# 8 MiB: above a 2,000-event batch's largest temporary (3 MB), below the state table's big arrays
# at scale (the ring of 100,000 streams is 51 MB), which stay mmapped and go back to the OS when
# the table grows. 64 MiB: free memory kept at the heap's top before it is returned.
MMAP_THRESHOLD = 8 << 20
TRIM_THRESHOLD = 64 << 20


def keep_batch_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds; False where there is no glibc (musl, macOS)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def tune_process() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    keep_batch_buffers()


# What TensorFlow 2.21 writes to the process's stderr while it is imported, whatever
# TF_CPP_MIN_LOG_LEVEL says (tensorflow/tensorflow#100442): a notice from its native code, before
# its logging is set up. It would be the only lines of a JSON log that are not JSON.
IMPORT_NOISE = (
    b"All log messages before absl::InitializeLog() is called are written to STDERR",
    b"oneDNN custom operations are on",
)


@contextlib.contextmanager
def filtered_native_stderr(noise: tuple[bytes, ...] = IMPORT_NOISE) -> Iterator[None]:
    """Capture file descriptor 2 (native code's and Python's writes alike) and write back every
    line that does not contain one of `noise` when the block ends, an error's output included."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp if not any(n in line for n in noise)]
            if kept:
                os.write(2, b"".join(kept))


def freeze_heap() -> None:
    """Move every object alive now (TensorFlow, Keras, the model: ~340k objects) out of the
    garbage collector's reach. A full collection over them takes ~155 ms on this 2-core machine:
    a pause every event in flight would wait out (the latency p99). Called once the model is in."""
    gc.collect()
    gc.freeze()
