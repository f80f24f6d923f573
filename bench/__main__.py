"""`python -m bench [--smoke] [--only scoring,...]`: run the benchmarks, write JSON and Markdown.

Writes bench/results/<date>.json and bench/results/benchmarks.md (the table the README links).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from detector.runtime import tune_process  # noqa: E402

tune_process()  # as the `detector` command does: the scorer is measured as it runs there

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench import e2e, memory, plots, quality, report, scoring, shadow  # noqa: E402
from bench.common import machine  # noqa: E402

SUITES = {"scoring": scoring.run, "memory": memory.run, "shadow": shadow.run, "quality": quality.run, "e2e": e2e.run}


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the code runs, numbers mean nothing")
    p.add_argument("--only", default=",".join(SUITES), help=f"comma list of {', '.join(SUITES)}")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    results = {"date": time.strftime("%Y-%m-%d"), "smoke": args.smoke, "machine": machine()}
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        results[name] = SUITES[name](smoke=args.smoke)
        results[name]["seconds"] = round(time.monotonic() - t0, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{results['date']}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    plots.write(results, out, "-smoke" if args.smoke else "")
    (out / ("benchmarks-smoke.md" if args.smoke else "benchmarks.md")).write_text(report.markdown(results))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
