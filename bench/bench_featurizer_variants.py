"""Featurizer variants on RouterBench: does more text structure lift the routers? (issue 8 item 7)

5-fold cross-validation by query (:func:`training.compare.cross_validated_sweeps`, the same folds,
weights and agents as ``python -m training.compare``) with routerl's featurizer and with two
variants that add dense features after its own (the same agents; only their inputs differ):

* ``structure``: six prompt-structure features: answer choices (lines starting ``A.`` / ``(b)``
  …, up to 6), code (fences, ``def``, ``return``, ``#include``, a line ending in ``;`` or ``{``),
  few-shot markers (``Question:`` / ``Answer:`` / ``Q:`` / ``A:``, up to 20), the share of digits,
  line count (up to 60) and a question mark; each scaled to about [0, 1].
* ``char-ngrams``: character 3-5-grams inside word boundaries (scikit-learn's ``char_wb``,
  sublinear tf-idf, ``min_df`` 2, 50,000 terms), projected to 16 LSA dimensions scaled to unit
  RMS, as routerl's word features are.

These are experiments: a variant that won would have to be added to the TorchScript featurizer
inside ``policy.pt`` too (and keep inference within its targets).

    python bench/bench_featurizer_variants.py                       # linucb,logistic; ~5 min
    python bench/bench_featurizer_variants.py --agents linucb,ppo,logistic
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

from data.featurizer import TextFeaturizer
from data.loading import load_log
from evaluation.evaluate import sweep_weights
from evaluation.sweep import AIQRange
from training.compare import Featurizer, cross_validated_sweeps
from training.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
CHOICE = re.compile(r"(?m)^\s*\(?[A-Ea-e][.)]\s")
CODE = re.compile(r"```|\bdef |\breturn\b|\bclass |;\s*$|\{\s*$|#include|\bimport ", re.M)
FEW_SHOT = re.compile(r"(?i)\b(question|answer|q|a)\s*:")


def structure(text: str) -> list[float]:
    """The six prompt-structure features of the module docstring."""
    length = max(len(text), 1)
    return [
        min(len(CHOICE.findall(text)), 6) / 4.0,
        float(CODE.search(text) is not None),
        min(len(FEW_SHOT.findall(text)), 20) / 10.0,
        10.0 * sum(ch.isdigit() for ch in text) / length,
        min(text.count("\n"), 60) / 20.0,
        float("?" in text),
    ]


class WithExtras:
    """routerl's featurizer followed by a variant's extra dense features."""

    def __init__(self, config: RunConfig, variant: str) -> None:
        self.words = TextFeaturizer(config.featurizer)
        self.variant = variant
        self.chars = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(3, 5), min_df=2, max_features=50000, sublinear_tf=True
        )
        self.svd = TruncatedSVD(16, random_state=config.seed)
        self.scale = np.ones(16)

    @property
    def dimension(self) -> int:
        """routerl's dimension plus the extras."""
        return self.words.dimension + (6 if self.variant == "structure" else 16)

    def fit(self, texts: list[str]) -> WithExtras:
        """Fit routerl's featurizer and, for ``char-ngrams``, the character tf-idf and its LSA."""
        self.words.fit(texts)
        if self.variant == "char-ngrams":
            projected = self.svd.fit_transform(self.chars.fit_transform(texts))
            self.scale = np.sqrt((projected**2).mean(axis=0)) + 1e-12
        return self

    def transform(self, texts: list[str]) -> np.ndarray:
        """routerl's features, then the extras (float32)."""
        if self.variant == "structure":
            extras = np.array([structure(text) for text in texts], dtype=np.float32).reshape(len(texts), 6)
        else:
            extras = (self.svd.transform(self.chars.transform(texts)) / self.scale).astype(np.float32)
        return np.hstack([self.words.transform(texts), extras])


def main() -> int:
    """Cross-validate each variant and print one markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "routerbench.yaml")
    parser.add_argument("--agents", default="linucb,logistic")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    config = load_config(args.config, ["evaluation.bootstrap=0"])
    log = load_log(config.data.path, progress=False).log
    weights = sweep_weights(log, config.evaluation)
    aiq_range = AIQRange.of(log)
    kinds = args.agents.split(",")
    makers: dict[str, Callable[[RunConfig], Featurizer]] = {
        "routerl (word tf-idf + LSA 16 + length)": lambda config: TextFeaturizer(config.featurizer),
        "+ structure (6)": lambda config: WithExtras(config, "structure"),
        "+ char 3-5-grams (LSA 16)": lambda config: WithExtras(config, "char-ngrams"),
    }
    print(f"| featurizer | {' | '.join(kinds)} | seconds |\n|---|{'---|' * len(kinds)}---|")
    for name, make in makers.items():
        start = time.perf_counter()
        sweeps = cross_validated_sweeps(log, config, kinds, args.folds, weights, make)
        aiq = " | ".join(f"{aiq_range.aiq(sweeps[kind].frontier()):.4f}" for kind in kinds)
        print(f"| {name} | {aiq} | {time.perf_counter() - start:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
