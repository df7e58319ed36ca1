"""The exported policy: one self-contained TorchScript file that routes text (or embeddings) to a model.

Imports only lower-layer helpers of :mod:`data` (the tokenizer and featurizer definitions); the
service imports :mod:`policies.artifact` alone, which needs nothing but torch (docs/architecture.md).
Modules:

- :mod:`policies.artifact` -- load and validate a policy file: the one loader (torch only).
- :mod:`policies.export` -- build and write a policy file from a learned agent and its featurizer.
- :mod:`policies.text_policy` -- the text policy: scripted featurizer, linear map, head, arms.
- :mod:`policies.embedding_policy` -- the policy for logs that carry the user's own query embeddings.
- :mod:`policies.scripted_featurizer` -- the TorchScript twin of :class:`data.featurizer.TextFeaturizer`.
- :mod:`policies.heads` -- scoring heads: linear-map outputs and a cost weight to one score per model.
- :mod:`policies.arms` -- the model names, the cost-weight check, the rules and the argmax decision.
- :mod:`policies.rules` -- rule overrides: the rules file, its checks, and its TorchScript mask (first match wins).
- :mod:`policies.glob` -- glob matching in TorchScript, for the rules' ``pattern``.
- :mod:`policies.faults` -- fault injection for tests (``ROUTERL_FAULT``): a kill at a named point of a
  durable write; here because every writer, the service included, may import :mod:`policies`.
"""
