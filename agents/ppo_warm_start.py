"""Behaviour-cloning warm start of PPO's actor: imitate a fitted reward model before the PPO updates.

A policy-gradient learner sees one sampled outcome per episode, where a supervised fit of a
full-information log sees every model's outcome of every query at once; on small logs (a few
hundred training queries) PPO from a random initialisation stays well below such fits. So,
before its first update, the preference-conditioned actor π(k | x, f(w)) of :mod:`agents.ppo` is
trained by cross-entropy to choose what a *teacher* chooses, and PPO then fine-tunes it on the
environment: behaviour cloning (Pomerleau, 1991) followed by reinforcement-learning fine-tuning,
as in Silver et al. (2016), "Mastering the game of Go with deep neural networks and tree
search", Nature 529, and Rajeswaran et al. (2018), "Learning complex dexterous manipulation with
deep reinforcement learning and demonstrations", RSS.

**The teacher** estimates every model's quality q̂_k(x) and cost ĉ_k(x) from the training split
alone and chooses argmax_k q̂_k(x) − w · ĉ_k(x) at a cost weight w:

* ``mlp``: the MLP peer (:mod:`agents.mlp`: a ReLU layer and a logistic output per model, its
  width and weight decay chosen by cross-validation; a ridge cost model);
* ``ridge``: one multi-output ridge regression of [quality | cost] on the features, each output's
  strength chosen from :data:`RIDGE_ALPHAS` by efficient leave-one-out error (scikit-learn's
  ``RidgeCV``): LinUCB's greedy rule with a λ the data choose, and far cheaper on large logs;
* ``none``: no warm start (PPO from its random initialisation).

It is fitted on at most ``teacher_queries`` training queries (a seeded sample), so its cost is
bounded whatever the log's size, and labels every training query.

**The examples** are ``examples`` pairs (a training query drawn uniformly, a weight drawn from
PPO's preference distribution), labelled with the teacher's choice, in minibatches of
``batch_size``, one pass; the loss is the cross-entropy of the actor's logits, minimised by
AdamW at ``learning_rate`` with PPO's weight decay, on the actor's parameters only (the critic
learns in PPO's own updates). The observations are the environment's, [x, f(w)] standardised as
PPO standardises them (measure (e) of :mod:`agents.ppo`). Every draw comes from a generator
seeded by PPO's seed, so the warm start is deterministic for a seed.

Measured under the cross-validated comparison (``training.compare``; BENCHMARKS.md, "Quality on
any dataset"): on RouteProfile (336 training queries a fold) the ``mlp`` teacher raised PPO's AIQ by
query from 0.626 to 0.648 and the ``ridge`` teacher to 0.635-0.637.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import ConfigDict, NonNegativeInt, PositiveFloat, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from stable_baselines3.common.policies import ActorCriticPolicy

from envs.rewards import PreferenceConfig

#: Ridge strengths the ``ridge`` teacher chooses from, per output, by leave-one-out error.
RIDGE_ALPHAS = tuple(float(alpha) for alpha in np.logspace(-2, 3, 11))


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class WarmStartConfig:
    """``agent.ppo.warm_start``: behaviour cloning of a fitted teacher before the PPO updates (module docstring)."""

    teacher: Literal["none", "ridge", "mlp"] = "mlp"  # the fitted reward model imitated; none: no warm start
    teacher_queries: PositiveInt = 20_000  # the teacher is fitted on at most this many training queries
    examples: NonNegativeInt = 200_000  # (query, weight) pairs imitated, whatever the log's size (0: none)
    batch_size: PositiveInt = 256  # minibatch of the cross-entropy steps
    learning_rate: PositiveFloat = 1e-3  # AdamW step size of the warm start


def teacher_estimates(config: WarmStartConfig, features: np.ndarray, quality: np.ndarray, cost: np.ndarray,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(q̂, ĉ), each (N, K): the teacher's quality and cost estimates of every training query.

    The teacher is fitted on at most ``teacher_queries`` of them, drawn by a generator seeded by ``seed``.
    """
    x = np.asarray(features, dtype=np.float64)
    fitted = np.arange(len(x))
    if len(x) > config.teacher_queries:
        fitted = np.sort(np.random.default_rng(seed).choice(len(x), config.teacher_queries, replace=False))
    if config.teacher == "ridge":
        from sklearn.linear_model import RidgeCV

        targets = np.hstack([quality[fitted], cost[fitted]]).astype(np.float64)
        estimates = RidgeCV(alphas=RIDGE_ALPHAS, alpha_per_target=True).fit(x[fitted], targets).predict(x)
        return estimates[:, : quality.shape[1]], estimates[:, quality.shape[1]:]
    from agents.mlp import MlpRouter

    router = MlpRouter(quality.shape[1], x.shape[1]).fit(x[fitted], quality[fitted], cost[fitted])
    at_zero = router.scores(x, 0.0)  # its utility q̂ − w · ĉ is affine in w
    return at_zero, at_zero - router.scores(x, 1.0)


def warm_start(policy: ActorCriticPolicy, features: np.ndarray, quality: np.ndarray, cost: np.ndarray,
               preference: PreferenceConfig, standardisation: tuple[np.ndarray, np.ndarray],
               config: WarmStartConfig, weight_decay: float, seed: int) -> None:
    """Train ``policy``'s actor to choose the teacher's model (module docstring); nothing with teacher ``none``.

    ``standardisation``: the mean and scale PPO's observations [x, f(w)] are standardised with.
    """
    if config.teacher == "none" or config.examples == 0:
        return
    rng = np.random.default_rng(seed)
    quality_hat, cost_hat = teacher_estimates(config, features, quality, cost, seed)
    rows = rng.integers(0, len(features), size=config.examples)
    weights = preference.sample(rng, config.examples)
    labels = np.argmax(quality_hat[rows] - weights[:, None] * cost_hat[rows], axis=1)
    mean, scale = standardisation
    observations = np.concatenate([features[rows], preference.encode(weights)[:, None]], axis=1)
    observations = ((observations - mean) / scale).astype(np.float32)
    actor = [*policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    optimiser = torch.optim.AdamW(actor, lr=config.learning_rate, weight_decay=weight_decay)
    for start in range(0, config.examples, config.batch_size):
        batch = slice(start, start + config.batch_size)
        inputs = torch.as_tensor(observations[batch], device=policy.device)
        targets = torch.as_tensor(labels[batch], device=policy.device)
        log_probabilities = policy.get_distribution(inputs).log_prob(targets)
        loss = -log_probabilities.mean()  # the cross-entropy of the teacher's choices
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
