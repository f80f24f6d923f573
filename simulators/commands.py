"""The commands the simulators add to `detector` (entry point group `detector.commands`):
`simulate`, `replay` and `demo`. `detector` never imports this package; its CLI finds these
through the installed package's entry points.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from detector.cli.main import PORT, POSITIVE, RATE, SEED, config_of

Add = Callable[[str, str], argparse.ArgumentParser]


def add_simulate(add: Add) -> None:
    sp = add("simulate", "write a labelled simulated event stream as JSON lines")
    sp.add_argument("--domain", choices=["cards", "sensors", "metrics"], default="cards")
    sp.add_argument("--streams", type=POSITIVE, default=1000, help="cards or machines (default 1000)")
    sp.add_argument("--days", type=POSITIVE, default=30, help="simulated days (default 30)")
    sp.add_argument("--scenario", default=None, help="scenario YAML (default: built-in default mix)")
    sp.add_argument("--seed", type=SEED, default=1)
    sp.add_argument("--out", required=True, help="FILE.jsonl, FILE.jsonl.gz, or - for stdout")
    sp.set_defaults(func=cmd_simulate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators.cli import simulate

    n = simulate(args.domain, args.streams, args.days, args.scenario, args.seed, args.out)
    print(f"simulate: wrote {n} events to {args.out}", file=sys.stderr)
    return 0


def add_replay(add: Add) -> None:
    sp = add("replay", "produce a JSONL file to a Kafka topic, keyed by stream id")
    sp.add_argument("file")
    sp.add_argument("--topic", default=None, help="default: kafka.input_topic")
    pace = sp.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=RATE, default=None, help="events per second")
    pace.add_argument("--speed", type=RATE, default=None, help="replay event time X times faster")
    pace.add_argument("--as-fast-as-possible", action="store_true")
    sp.add_argument("--config", default=None)
    sp.add_argument("--bootstrap-servers", default=None)
    sp.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    from simulators.replay import replay

    settings = config_of(args)
    if args.bootstrap_servers:
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": args.bootstrap_servers})}
        )
    rate = None if args.as_fast_as_possible else args.rate
    speed = None if args.as_fast_as_possible else args.speed
    topic = args.topic or settings.kafka.input_topic
    res = replay(
        args.file,
        settings.kafka,
        topic,
        rate=rate,
        speed=speed,
        stream_field=settings.features.stream_field,
        time_field=settings.features.time_field,
    )
    if res.failed or res.acked != res.sent:
        print(
            f"replay: {res.failed} sends failed, {res.sent - res.acked} unacknowledged; first error: {res.first_error}",
            file=sys.stderr,
        )
        return 1
    return 0


def add_demo(add: Add) -> None:
    sp = add("demo", "end to end on a local broker: train, run, replay fraud, summarise")
    sp.add_argument("--config", default=None)
    sp.add_argument("--port", type=PORT, default=9092, help="local broker port")
    sp.add_argument("--streams", type=POSITIVE, default=1000)
    sp.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from simulators.demo import demo

    return demo(args)
