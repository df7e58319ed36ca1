"""Held-out evaluation of any decision rule on a log, and the report built from it.

Imports :mod:`data`, :mod:`envs` and :mod:`policies`, never :mod:`agents` or :mod:`training`: a router is
seen only as a decision rule, ``decide(cost_weight) -> model index per query`` (docs/architecture.md). Modules:

- :mod:`evaluation.evaluate` -- the one evaluation of a router on a log and the report's sections: metrics with
  intervals, baselines, frontier and AIQ, budget, off-policy estimates (train.py, ``python -m evaluation`` and
  ``training.compare`` all call it).
- :mod:`evaluation.sweep` -- the cost-weight sweep: a router's choices at every swept cost weight.
- :mod:`evaluation.ope` -- off-policy estimates on a bandit-feedback log, and cross-fitted reward-model predictions.
- :mod:`evaluation.metrics` -- quality, cost, reward, regret and share per model of a decision.
- :mod:`evaluation.bootstrap` -- bootstrap confidence intervals over queries.
- :mod:`evaluation.frontier` -- cost-quality frontiers and AIQ.
- :mod:`evaluation.objectives` -- every objective side by side (USD, latency, energy, carbon): the report's
  ``objectives`` section.
- :mod:`evaluation.budget` -- the cost weight that meets a target mean cost or quality.
- :mod:`evaluation.cascade` -- cascade baselines (one call, threshold cascade, agreement), every call's cost counted.
- :mod:`evaluation.routers` -- adapters that let evaluation ask any router for its choice.
- :mod:`evaluation.report` -- ``report.md``, the report as tables.
- :mod:`evaluation.figures` -- ``frontier.png``.
- :mod:`evaluation.html_report` -- ``report.html`` and ``compare.html``, a report as one interactive page.
- :mod:`evaluation.__main__` -- ``python -m evaluation POLICY --data LOG``.
"""
