"""Learners of a routing decision rule: features and a cost weight in, one score per model out.

Imports :mod:`envs`, :mod:`data` and, of :mod:`policies`, only the heads (docs/architecture.md).
Modules:

- :mod:`agents.base` -- what every agent offers: the decision rule, ``train`` (the one training
  entry point) and the optional abilities (``state_dict``, ``parameters``, ``cost_weight_range``).
- :mod:`agents.registry` -- the agent kinds, registered once (``agent.kind`` → class, section, and
  what of the configuration each reads: the one check of no-op settings).
- :mod:`agents.callbacks` -- the callbacks step-wise learners call (SB3 style), keep-best on
  validation with early stopping.
- :mod:`agents.linucb` -- LinUCB with disjoint arms and separate quality and cost models.
- :mod:`agents.linucb_statistics` -- LinUCB's sufficient statistics, summable over blocks.
- :mod:`agents.lints` -- linear Thompson sampling on LinUCB's ridge statistics.
- :mod:`agents.peers` -- supervised routers from the literature (logistic, k nearest neighbours)
  and the ridge cost model the supervised peers share.
- :mod:`agents.quality_network` -- one hidden layer to every model's quality, fitted and tuned by
  cross-validation: the network of the MLP and MF peers.
- :mod:`agents.mlp`, :mod:`agents.factorisation` -- the MLP and matrix-factorisation routers.
- :mod:`agents.ppo` -- PPO (stable-baselines3) on the batched routing environment.
- :mod:`agents.ppo_envs` -- the environment wrappers PPO trains on (reward shaping, λ, standardising).
- :mod:`agents.baselines` -- random, cheapest and best-single-model baselines.
"""
