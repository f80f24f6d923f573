"""The `detector` command: check-config, train, run, score, evaluate, and the commands other
packages register (`simulate`, `replay` and `demo` come from the simulators package).

Exit codes: 0 success, 1 runtime failure, 2 bad usage, bad configuration or an unusable input file
(one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from detector.config import Settings, load_config
from detector.exceptions import ConfigError, DataError, DetectorError
from detector.offline.baselines.models import BASELINES
from detector.runtime import tune_process

log = logging.getLogger("detector")
DEFAULT_CONFIG = "config/detector.yaml"
# The entry point group of commands added by other packages: each is `register(add)`, where
# `add(name, help)` returns the command's argparse parser (set `func` on it).
COMMANDS = "detector.commands"
# The watchdog fires this long after the shutdown budget: time for the deadline's own error line
# and the exit. Deploy files give the process more (terminationGracePeriodSeconds 40 > 20 + 5).
WATCHDOG_GRACE_S = 5.0


def config_of(args: argparse.Namespace) -> Settings:
    """The config file of `--config`, else config/detector.yaml when present, else defaults."""
    path = args.config if args.config else (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    return load_config(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_config(args.file)
    print(json.dumps(settings.masked(), indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from detector.logs import setup_logging
    from detector.offline.training import train, train_from_file

    settings = config_of(args)
    setup_logging(settings.runtime.log_level, settings.runtime.log_format)
    out = Path(args.out) if args.out else settings.model.path
    say = lambda m: print(f"train: {m}", file=sys.stderr, flush=True)  # noqa: E731
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    if (args.data is None) == (args.topic is None):
        raise ConfigError("train: give --data FILE or --topic TOPIC (one of them)")
    if args.data is not None:
        if args.since or args.until:
            raise ConfigError("train --since/--until: only with --topic")
        train_from_file(settings, Path(args.data), out, log=say, epochs=args.epochs, seed=args.seed, progress=bar)
        return 0
    from detector.core.features import FeatureSpec
    from detector.kafka.factory import client_for
    from detector.lifecycle.harvest import harvest, parse_time

    since = None if args.since is None else parse_time(args.since, "--since")
    until = None if args.until is None else parse_time(args.until, "--until")
    if since is not None and until is not None and until <= since:
        raise ConfigError("--until: not after --since")
    t0 = time.monotonic()
    seed = settings.model.seed if args.seed is None else args.seed
    got = harvest(
        client_for(settings.kafka), settings, FeatureSpec.from_config(settings.features), args.topic,
        since, until, args.max_streams, args.max_events, seed, ReadProgress(sys.stderr),
    )  # fmt: skip
    src, ex = got.source, got.source["excluded"]
    say(
        f"read {src['records_read']} records of {args.topic} ({sum(src['invalid'].values())} invalid); "
        f"left out {ex['fraud_verdict_streams']} streams with a fraud verdict, {ex['fraud_label_streams']} "
        f"labelled fraud, {ex['sampled_out_streams']} sampled out"
    )
    train(settings, got.dataset, out, src, f"topic {args.topic}", say, args.epochs, seed, bar, t0)
    return 0


class ReadProgress:
    """Records read of the range, redrawn in place on a terminal; a line every 10% elsewhere."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.tty, self._tenth = stream, stream.isatty(), -1

    def __call__(self, done: int, total: int) -> None:
        share = done / max(total, 1)
        if self.tty:
            self.stream.write(f"\rtrain: read {done}/{total} records ({share:.0%})" + ("\n" if done >= total else ""))
        elif int(share * 10) > self._tenth:
            self._tenth = int(share * 10)
            self.stream.write(f"train: read {done}/{total} records ({share:.0%})\n")
        self.stream.flush()


class ProgressBar:
    """The training epoch's batches as a bar redrawn in place on a terminal, at most 10 times a
    second, and erased at the epoch's end (its log line follows). Not drawn into logs or pipes."""

    WIDTH = 30

    def __init__(self, stream: Any) -> None:
        self.stream, self._drawn = stream, -1.0

    def __call__(self, epoch: int, epochs: int, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._drawn < 0.1:
            return
        self._drawn = now
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        line = f"train: epoch {epoch}/{epochs} [{bar}] {done}/{total} batches"
        self.stream.write("\r" + (line if done < total else " " * len(line)) + "\r" * (done >= total))
        self.stream.flush()


def cmd_run(args: argparse.Namespace) -> int:
    from detector.logs import setup_logging
    from detector.service.loop import Detector

    settings = config_of(args)
    setup_logging(settings.runtime.log_level, settings.runtime.log_format)
    log.info("effective config: %s", json.dumps(settings.masked(), sort_keys=True))
    app = Detector(settings)
    interrupts = 0

    def request_stop(signum: int, _frame: Any) -> None:
        nonlocal interrupts
        interrupts += 1
        if signum == signal.SIGINT and interrupts > 1:
            os._exit(130)  # a second Ctrl-C: the user does not want to wait for a clean stop
        log.info("signal %s: stopping after the current batch", signal.Signals(signum).name)
        app.stop()
        if interrupts == 1:
            # A backstop. The stop's own deadline (detector.service.deadline, from app.stop())
            # ends the checkpoint's flushes and the client closes inside the budget, or says which
            # step ran out; this only catches a call that takes no timeout at all (librdkafka's
            # consumer close) hanging past it: exit non-zero rather than hang the caller.
            budget = settings.runtime.shutdown_timeout_seconds + WATCHDOG_GRACE_S

            def give_up() -> None:
                log.error("clean stop exceeded %.0fs: exiting", budget)
                os._exit(1)

            watchdog = threading.Timer(budget, give_up)
            watchdog.daemon = True
            watchdog.start()

    def request_reload(_signum: int, _frame: Any) -> None:
        log.info("SIGHUP: reloading the model after the current batch")
        app.request_reload()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_reload)
    app.run(max_events=args.max_events, timeout=args.timeout)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Make the challenger (model.shadow_path) the champion (model.path). The running daemon sees
    the new version in its model folder (model.watch_seconds, or the SIGHUP sent with --pid) and,
    since it is the version it scores in shadow, takes it over with its per-stream state."""
    from detector.offline.model import copy_artifact, load_artifact

    settings = config_of(args)
    m = settings.model
    if m.shadow_path is None:
        raise ConfigError("model.shadow_path: not set; there is no challenger to promote")
    rival = load_artifact(m.shadow_path)
    current = load_artifact(m.path) if (m.path / "metadata.json").is_file() else None
    if current is not None and current.version == rival.version:
        print(f"promote: {m.path} already serves {rival.version}", file=sys.stderr)
        return 0
    copy_artifact(m.shadow_path, m.path)
    print(
        f"promote: {m.path} now holds {rival.version} (was {current.version if current else 'empty'})", file=sys.stderr
    )
    if args.pid is not None:
        os.kill(args.pid, signal.SIGHUP)
        print(f"promote: sent SIGHUP to {args.pid}", file=sys.stderr)
    elif m.watch_seconds == 0:
        print("promote: model.watch_seconds is 0: send the daemon SIGHUP (or pass --pid)", file=sys.stderr)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from detector.offline.evaluate import score_file

    settings = config_of(args)
    n = score_file(settings, Path(args.model), Path(args.data), args.out)
    print(f"score: wrote {n} lines to {args.out}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from detector.offline.evaluate import evaluate_file, format_report

    settings = config_of(args)
    plots = Path(args.plots) if args.plots else None
    train = Path(args.train) if args.train else None
    report = evaluate_file(settings, Path(args.model), Path(args.data), args.baseline, plots, train)
    print(json.dumps(_finite(report), indent=2) if args.json else format_report(report))
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from detector.logs import setup_logging

    settings = config_of(args)
    cfg = settings.console
    if args.add_user:
        import getpass

        from detector.console.users import add_user

        password = getpass.getpass(f"password for {args.add_user}: ") if sys.stdin.isatty() else sys.stdin.readline()
        if not password.strip():
            raise ConfigError("console --add-user: an empty password")
        add_user(Path(cfg.users_file), args.add_user, password.rstrip("\n"))
        print(f"console: {args.add_user} can log in ({cfg.users_file})", file=sys.stderr)
        return 0
    try:
        import uvicorn

        from detector.console.app import make_app
    except ImportError as exc:
        raise ConfigError(
            f"detector console needs {exc.name} from the 'console' extra: pip install 'detector[console]'"
        ) from None
    if not Path(cfg.users_file).is_file():
        raise ConfigError(f"console.users_file: {cfg.users_file} does not exist (detector console --add-user NAME)")
    setup_logging(settings.runtime.log_level, settings.runtime.log_format)
    log.info("console on http://%s:%d", cfg.host, cfg.port)
    uvicorn.run(make_app(settings), host=cfg.host, port=cfg.port, log_level="warning")
    return 0


def _finite(obj: Any) -> Any:
    """NaN (an undefined metric, e.g. no incident caught) as null: strict JSON has no NaN."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _number(kind: type, low: float, label: str, high: float = float("inf")) -> Any:
    """An argparse type: a `kind` number in [low, high], else a usage error saying so."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {label}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"{text!r} is not {label}")
        return value

    return parse


POSITIVE = _number(int, 1, "a positive integer")
SEED = _number(int, 0, "a non-negative integer")
RATE = _number(float, 1e-9, "a positive number")
PORT = _number(int, 1, "a port number (1-65535)", 65535)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="detector", description="Streaming anomaly detection over Kafka with a stateful LSTM autoencoder."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        return sp

    sp = add("check-config", "validate a config file and print the effective config (secrets masked)")
    sp.add_argument("file")
    sp.set_defaults(func=cmd_check_config)

    sp = add("train", "train a model folder on normal events (label == 0 when labels exist)")
    sp.add_argument("--data", default=None, help="a JSONL file of events")
    sp.add_argument("--topic", default=None, help="or read the events of this Kafka topic (kafka.* from config)")
    sp.add_argument("--since", default=None, help="with --topic: from this time (ISO 8601, e.g. 2026-11-01T00:00Z)")
    sp.add_argument("--until", default=None, help="with --topic: up to this time (default: the topic's end now)")
    sp.add_argument("--max-streams", type=POSITIVE, default=50_000, help="with --topic: streams held at most")
    sp.add_argument("--max-events", type=POSITIVE, default=2_000_000, help="with --topic: events held at most")
    sp.add_argument("--out", default=None, help="model folder (default: model.path from config)")
    sp.add_argument("--config", default=None)
    sp.add_argument("--epochs", type=POSITIVE, default=None)
    sp.add_argument("--seed", type=SEED, default=None)
    sp.set_defaults(func=cmd_train)

    sp = add("run", "run the daemon: consume, score, alert, serve metrics")
    sp.add_argument("--config", default=None)
    sp.add_argument("--max-events", type=POSITIVE, default=None, help="stop after this many events")
    sp.add_argument("--timeout", type=RATE, default=None, help="stop after this many seconds")
    sp.set_defaults(func=cmd_run)

    sp = add("promote", "make the challenger (model.shadow_path) the champion, keeping its per-stream state")
    sp.add_argument("--config", default=None)
    sp.add_argument("--pid", type=POSITIVE, default=None, help="send this daemon SIGHUP once the files are in place")
    sp.set_defaults(func=cmd_promote)

    sp = add("score", "score a JSONL file offline with the streaming scorer")
    sp.add_argument("--model", required=True)
    sp.add_argument("--data", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--config", default=None)
    sp.set_defaults(func=cmd_score)

    sp = add("evaluate", "detection quality of a model on a labelled JSONL file")
    sp.add_argument("--model", required=True)
    sp.add_argument("--data", required=True)
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--baseline", choices=list(BASELINES), default=None, help="score the same events with a baseline too"
    )
    sp.add_argument("--train", default=None, help="the baseline's training data (default: the model's, if still there)")
    sp.add_argument("--plots", default=None, metavar="DIR", help="write pr_curve.png and timelines.png here")
    sp.add_argument("--config", default=None)
    sp.set_defaults(func=cmd_evaluate)

    sp = add("console", "the analysts' triage page: alerts, the stream's events, verdicts")
    sp.add_argument("--config", default=None)
    sp.add_argument("--add-user", default=None, metavar="NAME", help="add or replace a login (password on stdin)")
    sp.set_defaults(func=cmd_console)

    # Commands other packages add (the simulators: simulate, replay, demo), through the entry
    # point group detector.commands: `detector` itself never imports them.
    for ep in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        ep.load()(add)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    tune_process()  # before NumPy loads: one BLAS thread, batch buffers kept (see detector.runtime)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"detector: {exc}", file=sys.stderr)
        return 2
    except DetectorError as exc:
        print(f"detector: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
