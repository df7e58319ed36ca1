"""Routing as a reinforcement-learning environment: a logged routing problem as a contextual bandit.

Imports only :mod:`data` (docs/architecture.md). Modules:

- :mod:`envs.task` -- the routing task both environments share (features, outcome tables, rewards).
- :mod:`envs.routing_env` -- :class:`~envs.routing_env.RoutingEnv`, one episode as a Gymnasium env.
- :mod:`envs.vec_env` -- :class:`~envs.vec_env.RoutingVecEnv`, N episodes at once as a stable-baselines3 VecEnv.
- :mod:`envs.cascade_env` -- :class:`~envs.cascade_env.CascadeEnv`, cascades (call, look, escalate or return) as a
  multi-step env with action masks.
- :mod:`envs.rewards` -- the reward shapes.
- :mod:`envs.estimators` -- the reward model, the registry of off-policy estimators (DM, IPS, SNIPS, DR, replay)
  and `counterfactual_log`, the one path from a bandit log to an estimated outcome table.
"""
