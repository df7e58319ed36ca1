"""Synthetic routing logs with known ground truth.

Why: tests, the demo data and benchmarks need logs where the right answer is known. Here every
(query, model) pair has an exact expected quality, so a router's choices can be scored against
the truth and against the per-query oracle, and a bandit log has exact logging propensities, so
off-policy estimators can be checked. The demo log is the defaults' output:
``python -m data synth --out data/demo/demo.jsonl``.

Modules:
- :mod:`data.synth.config` -- :class:`SynthConfig` (every knob of the world) and :class:`SynthLog`
  (the generated columns plus the ground truth).
- :mod:`data.synth.generator` -- :func:`generate`: the world (text, models, prices, skills, drift,
  logging policy) and how it is drawn.
- :mod:`data.synth.writers` -- :func:`write`: a log as .jsonl, .csv or .parquet in canonical long format.
- :mod:`data.synth.cli` -- the ``python -m data synth`` flags and entry point.
"""

from data.synth.cli import add_arguments, main
from data.synth.config import SynthConfig, SynthLog
from data.synth.generator import generate
from data.synth.writers import COLUMNS, write

__all__ = ["COLUMNS", "SynthConfig", "SynthLog", "add_arguments", "generate", "main", "write"]
