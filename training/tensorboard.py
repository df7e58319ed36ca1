"""TensorBoard logging with namespaced tags (``charts/reward``, ``charts/quality``, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter


class TensorBoardLogger:
    """Writes the run's scalars under ``tb/``; ``on_step`` averages online steps in windows."""

    def __init__(self, directory: Path, window: int = 500) -> None:
        self.writer = SummaryWriter(log_dir=str(directory))
        self.window = window
        self._buffer: dict[str, list[float]] = {"reward": [], "quality": [], "cost": [], "regret": []}

    def on_step(self, step: int, reward: float, info: dict[str, Any]) -> None:
        """Callback for online learning: one episode's outcome; flushed every ``window`` steps."""
        self._buffer["reward"].append(reward)
        for key in ("quality", "cost", "regret"):
            self._buffer[key].append(float(info[key]))
        if len(self._buffer["reward"]) >= self.window:
            for key, values in self._buffer.items():
                self.writer.add_scalar(f"charts/train_{key}", float(np.mean(values)), step)
                values.clear()

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

    def log_figure(self, tag: str, figure: Figure, step: int) -> None:
        """A matplotlib figure as an image (the frontier at each evaluation)."""
        self.writer.add_figure(tag, figure, step, close=True)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
