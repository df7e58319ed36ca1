"""The exported policy: one self-contained TorchScript file that routes text (or embeddings) to a model,
and its portable twin in safetensors, which a numpy engine routes with, without torch.

Imports only lower-layer helpers of :mod:`data` (the tokenizer and featurizer definitions); the
service imports the loaders (:mod:`policies.artifact`, torch only; :mod:`policies.native`, numpy and
:mod:`data.tokenizer`), never the training side (docs/architecture.md).
Modules:

- :mod:`policies.artifact` -- load and validate a ``policy.pt``: the TorchScript engine's loader (torch only).
- :mod:`policies.policy_file` -- what both engines' loaders share: safe reading, the version, the metadata checks.
- :mod:`policies.portable` -- the portable twin ``policy.safetensors``: its format, read and checked (no torch).
- :mod:`policies.portable_writer` -- the twin's bytes, from a scripted policy (torch only).
- :mod:`policies.native` -- the native engine: a portable policy scored with numpy, the loader's face (no torch).
- :mod:`policies.native_featurizer` / :mod:`policies.native_heads` / :mod:`policies.native_rules` -- its tf-idf
  and linear map, its heads, its rule overrides.
- :mod:`policies.glob_syntax` -- the rules' glob syntax, parsed once for both engines (no torch).
- :mod:`policies.exported_program` -- the numeric core (bags of term weights → scores, costs) as a ``torch.export``
  program, ``policy.pt2``.
- :mod:`policies.__main__` -- ``python -m policies portable | export-program``.
- :mod:`policies.export` -- build and write a policy file from a learned agent and its featurizer.
- :mod:`policies.text_policy` -- the text policy: scripted featurizer, linear map, head, arms.
- :mod:`policies.embedding_policy` -- the policy for logs that carry the user's own query embeddings.
- :mod:`policies.scripted_featurizer` -- the TorchScript twin of :class:`data.featurizer.TextFeaturizer`.
- :mod:`policies.response_features` -- features of a model's response and agreement of two, TorchScript-able.
- :mod:`policies.heads` -- scoring heads: linear-map outputs and a cost weight to one score per model.
- :mod:`policies.arms` -- the model names, the cost-weight check, the rules and the argmax decision.
- :mod:`policies.rules` -- rule overrides: the rules file, its checks, and its TorchScript mask (first match wins).
- :mod:`policies.glob` -- glob matching in TorchScript, for the rules' ``pattern``.
- :mod:`policies.faults` -- fault injection for tests (``ROUTERL_FAULT``): a kill at a named point of a
  durable write; here because every writer, the service included, may import :mod:`policies`.
"""
