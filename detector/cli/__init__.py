"""The command line (`detector run | train | score | evaluate | ...`) and the demo."""

from detector.cli.main import main

__all__ = ["main"]
