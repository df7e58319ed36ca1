"""TensorBoard logging with namespaced tags (``charts/reward``, ``charts/quality``, ...).

:class:`TensorBoardLogger` writes the event file; :class:`TensorBoardCallback` is the callback
(:mod:`agents.callbacks`) through which every step-wise learner logs while it trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from agents.callbacks import Callback, Outcomes

OUTCOMES = ("reward", "quality", "cost", "regret")


class TensorBoardLogger:
    """Writes the run's scalars, histograms, figures and configuration under ``tb/``."""

    def __init__(self, directory: Path) -> None:
        self.writer = SummaryWriter(log_dir=str(directory))

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Scalars already namespaced by their producer (PPO's ``losses/...``, ``charts/...``)."""
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, float(value), step)

    def log_metrics(self, metrics: dict[str, Any], step: int, prefix: str = "charts") -> None:
        """Held-out metrics as ``charts/reward``, ``charts/quality``, ``charts/cost``, ``charts/regret``."""
        for key, tag in (
            ("mean_reward", "reward"),
            ("mean_quality", "quality"),
            ("mean_cost", "cost"),
            ("regret", "regret"),
        ):
            self.writer.add_scalar(f"{prefix}/{tag}", float(metrics[key]), step)

    def log_choices(self, actions: np.ndarray, n_models: int, step: int) -> None:
        """Histogram of the chosen model indices (``charts/chosen_model``)."""
        self.writer.add_histogram("charts/chosen_model", np.asarray(actions), step, bins=np.arange(n_models + 1) - 0.5)

    def log_config(self, resolved_yaml: str) -> None:
        """The resolved configuration as text (``config``)."""
        self.writer.add_text("config", f"```yaml\n{resolved_yaml}\n```", 0)

    def log_hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Hyperparameters with the final metrics, for TensorBoard's HParams plugin."""
        flat = {
            key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in hparams.items()
        }
        self.writer.add_hparams(flat, {f"hparams/{key}": value for key, value in metrics.items()}, run_name=".")

    def log_tuning(self, tuning: dict[str, Any]) -> None:
        """Every tuning candidate as an HParams session (``tuning/NNN``) with its cross-validated score.

        The HParams plugin then shows the grid as a table and parallel coordinates, beside the run's own session.
        """
        for index, entry in enumerate(tuning.get("scores", [])):
            hparams = {key: value for key, value in entry.items() if key != "score"}
            self.writer.add_hparams(hparams, {"hparams/tuning_score": entry["score"]}, run_name=f"tuning/{index:03d}")

    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        """A matplotlib figure as an image (the frontier at each evaluation)."""
        self.writer.add_figure(tag, figure, step, close=True)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()


class TensorBoardCallback(Callback):
    """Training curves: ``charts/train_<outcome>`` means, the learner's diagnostics, the validation score.

    Outcomes (reward, quality, cost, regret) are averaged over the episodes since the last point
    and written at the first whole state (``on_rollout_end``) after at least ``window`` episodes:
    every PPO rollout (1,024 episodes by default), every ``window`` LinUCB steps. The learner's
    own scalars (PPO's ``losses/...``) are written at every ``on_rollout_end``, and the shared
    record (keep-best's ``charts/validation_score``) with the outcome means.
    """

    def __init__(self, logger: TensorBoardLogger, window: int = 500) -> None:
        super().__init__()
        self.logger = logger
        self.window = window
        self._sums = dict.fromkeys(OUTCOMES, 0.0)
        self._count = 0

    def on_step(self, step: int, outcomes: Outcomes) -> bool:
        """Add the step's outcomes to the running sums."""
        for key in OUTCOMES:
            self._sums[key] += float(getattr(outcomes, key).sum())
        self._count += len(outcomes.reward)
        return True

    def on_rollout_end(self, step: int, scalars: dict[str, float]) -> None:
        """The learner's scalars; the outcome means and the record once ``window`` episodes are in."""
        self.logger.log_scalars(scalars, step)
        if self._count < self.window:
            return
        means = {f"charts/train_{key}": total / self._count for key, total in self._sums.items()}
        self.logger.log_scalars(means | self.record, step)
        self._sums = dict.fromkeys(OUTCOMES, 0.0)
        self._count = 0
