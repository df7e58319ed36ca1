"""Routing logs: reading, validating and quarantining them, and what is computed from them alone.

The lowest layer: it imports no other routerl package (docs/architecture.md), so every layer above
may use it. Modules:

- :mod:`data.schema` -- the log's column names, the fixed rejection reasons, the user-error types.
- :mod:`data.loading` -- :func:`~data.loading.load_log`: read a file or directory, validate, quarantine.
- :mod:`data.reading` -- per-row readers of JSONL, CSV, Parquet and RouterBench wide files.
- :mod:`data.columnar` -- the columnar fast path (pyarrow blocks, whole-column checks).
- :mod:`data.rules` -- every validation rule, once: its rejection reason, message and test (per row and on columns).
- :mod:`data.validation` -- applies the row rules to one parsed row, in order.
- :mod:`data.log_builder` -- cross-row rules (duplicates, conflicting text, incomplete queries), then the matrices.
- :mod:`data.quarantine` -- rejected rows kept, counted by reason, written to ``rejected.jsonl``.
- :mod:`data.decision_log` -- a service's decision log joined into bandit-feedback rows.
- :mod:`data.responses` -- each outcome's response text, read on demand (cascades).
- :mod:`data.routing_log` -- :class:`~data.routing_log.RoutingLog`, the in-memory query x model log.
- :mod:`data.fingerprint` -- the data fingerprint: sha256 of the accepted rows in canonical form.
- :mod:`data.prices` -- price tables (USD per 1M tokens) to cost rows that carry only tokens.
- :mod:`data.energy` -- energy per call: the model table that estimates ``energy_wh`` where a log lacks it.
- :mod:`data.splits` -- train / validation / test splits by query_id hash or by time.
- :mod:`data.tokenizer` -- the byte-level tokenization both featurizer twins share.
- :mod:`data.featurizer` -- the training-side text featurizer (tf-idf, LSA projection, length, bias).
- :mod:`data.summary` -- ``python -m data summary``: what is in a log, what loading would reject.
- :mod:`data.synth` -- synthetic logs with known ground truth (``python -m data synth``).
- :mod:`data.fetch` -- ``python -m data fetch``: public datasets (RouterBench) downloaded, sha256-verified.
- :mod:`data.__main__` -- ``python -m data SUBCOMMAND``.
"""
