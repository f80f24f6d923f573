"""The container contract, without a container engine: `detector run` as a non-root user on a
read-only root filesystem, with one writable temp dir, end to end against the real broker.

The sandbox is a private mount namespace (util-linux `unshare`): `/` is remounted read-only
there and a tmpfs mounted for HOME, TMPDIR and KERAS_HOME, as the compose file and the k8s
manifest do. `setpriv` then drops to uid/gid 65534 (nobody). It keeps one capability,
CAP_DAC_READ_SEARCH (read any file), only so the test works wherever the checkout lives (e.g.
under /root); it grants no write access. The daemon keeps no state on disk: its state is in Kafka.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from detector.jsonl import read_jsonl
from tests.helpers import wait_for
from tests.integration.conftest import require
from tests.integration.kafka_io import all_committed, produce
from tests.integration.test_faults import Daemon, scored, settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SANDBOX = """set -e
mount -o remount,bind,ro /
mount -t tmpfs -o size=256m,mode=1777 tmpfs "$DETECTOR_RW"
if touch /.detector-write-probe 2>/dev/null; then echo "root filesystem still writable" >&2; exit 97; fi
exec setpriv --reuid=65534 --regid=65534 --clear-groups \\
  --inh-caps=-all,+dac_read_search --ambient-caps=+dac_read_search "$@"
"""


def test_runs_as_non_root_on_a_read_only_root_filesystem(  # type: ignore[no-untyped-def]
    broker, names, small_settings, model_dir, test_file, tmp_path: Path
) -> None:
    unshare, _ = require("unshare"), require("setpriv")
    rw = tmp_path / "rw"
    rw.mkdir()
    env = {
        **os.environ,
        "DETECTOR_RW": str(rw),
        "HOME": str(rw),
        "TMPDIR": str(rw),
        "KERAS_HOME": str(rw / "keras"),
        "MPLCONFIGDIR": str(rw / "matplotlib"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    s = settings(small_settings, broker.bootstrap, names, model_dir)
    lines = list(read_jsonl(test_file))
    keyed = [(orjson.loads(x)["stream_id"].encode(), x) for x in lines]
    prefix = [unshare, "--mount", "--", "sh", "-c", SANDBOX, "sandbox"]
    with Daemon(s, model_dir, tmp_path, prefix=prefix, env=env) as d:
        wait_for(lambda: d.states and d.states[-1] == 200 or d.proc.poll() is not None, 120, "the daemon ready")
        assert d.proc.poll() is None, d.output()[-3000:]
        status = Path(f"/proc/{d.proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1:] == ["65534"] * 4, uid_line  # the daemon itself, not a wrapper
        produce(broker.bootstrap, names["input"], keyed)
        wait_for(lambda: all_committed(broker.bootstrap, names["group"], names["input"]), 120, "every offset committed")
        assert d.stop() == 0, d.output()[-3000:]
    out = d.output()
    assert "Read-only file system" not in out and "Permission denied" not in out, out[-3000:]
    assert not list(rw.iterdir())  # the tmpfs was the sandbox's own: nothing leaked to the real dir
    got = scored(broker.bootstrap, names["alerts"])
    assert {orjson.loads(x)["event_id"] for x in lines} <= set(got)
