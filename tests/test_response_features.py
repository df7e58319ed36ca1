"""Response features: the scripted module equals the eager one; the features and answers mean what they say;
responses are read back from a log's files, aligned with its accepted outcomes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from data.loading import load_log
from data.responses import read_responses
from data.schema import DataError
from policies.export import script
from policies.response_features import FEATURE_NAMES, ResponseFeaturizer, response_table

EDGE_RESPONSES = [
    "",
    " \t\n\r ",
    "B",
    "(b)\n",
    "A) Ian",
    "The answer is (C).",
    "Answer: 42\nbecause six times seven",
    "I'm sorry, but as an AI I cannot help with that.",
    "I DON\u2019T KNOW",  # typographic apostrophe, upper case
    "```python\ndef f(x):\n    return x\n```",
    "Kelvin \u212a, dotted \u0130stanbul, \u01c5, stra\u00dfe: Python's lower() folds these, TorchScript's does not",
    "\u00c9COLE caf\u00e9 \u65e5\u672c\u8a9e \U0001f642 \u00a0nbsp\u2003em space",
    "a dog is not a choice",
    "python " * 150_000,  # about 1 MB
]


def _feature(features: torch.Tensor, row: int, name: str) -> float:
    return float(features[row, FEATURE_NAMES.index(name)])


def _assert_parity(texts: list[str]) -> None:
    eager, scripted = ResponseFeaturizer(), script(ResponseFeaturizer())
    assert torch.equal(eager(texts), scripted(texts))
    assert eager.answers(texts) == scripted.answers(texts)
    shifted = texts[1:] + texts[:1]
    assert torch.equal(eager.agreement(texts, shifted), scripted.agreement(texts, shifted))


def test_scripted_features_equal_eager_on_edge_inputs() -> None:
    _assert_parity(EDGE_RESPONSES)
    _assert_parity([])


def test_scripted_features_equal_eager_on_routerbench_responses(routerbench: Path) -> None:
    log = load_log(routerbench).log
    sample = log.subset(np.arange(0, log.n_queries, 40))  # every file's tasks, 11 models each
    responses = read_responses(routerbench, sample)
    _assert_parity(responses.ravel().tolist())


def test_features_of_known_responses() -> None:
    features = ResponseFeaturizer()(EDGE_RESPONSES)
    assert features.shape == (len(EDGE_RESPONSES), len(FEATURE_NAMES)) and features.dtype == torch.float32
    assert _feature(features, 0, "log_bytes") == 0 and _feature(features, 0, "empty") == 1
    assert _feature(features, 1, "empty") == 1 and _feature(features, 2, "empty") == 0
    assert _feature(features, 2, "short") == 1 and _feature(features, 6, "short") == 0
    assert _feature(features, 2, "log_bytes") == pytest.approx(np.log(2.0))
    assert _feature(features, 11, "log_bytes") == pytest.approx(np.log1p(len(EDGE_RESPONSES[11].encode())))
    assert _feature(features, 6, "log_lines") == pytest.approx(np.log(2.0))
    assert _feature(features, 7, "refusal") == 1 and _feature(features, 8, "refusal") == 0
    assert _feature(features, 8, "hedge") == 1 and _feature(features, 7, "hedge") == 0
    assert _feature(features, 9, "code_block") == 1 and _feature(features, 9, "code_definition") == 1
    assert _feature(features, 5, "answer_phrase") == 1 and _feature(features, 2, "answer_phrase") == 0
    assert [_feature(features, row, "choice") for row in (2, 3, 4, 5, 6, 12)] == [1, 1, 1, 1, 0, 0]


def test_answers_are_normalised_and_agree_only_when_equal_and_not_empty() -> None:
    featurizer = ResponseFeaturizer()
    answers = featurizer.answers(["B", "b)", "(B)\n", "The answer is B.", "Answer: 42\n  because", "a dog", "", "  "])
    assert answers == ["b", "b", "b", "b", "42 because", "a dog", "", ""]
    agree = featurizer.agreement(["B", "The answer is C", "", "x"], ["(b)", "c) maybe", "", "y"])
    assert agree.tolist() == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="same length"):
        featurizer.agreement(["a"], [])


def test_response_table_agreement_is_the_modules_pairwise_rule() -> None:
    responses = np.array(
        [["B", "(b)", "C", ""], ["", "", "x", "X"], ["answer is 7", "7", "7.", "I don't know"]], dtype=object
    )
    table = response_table(responses)
    featurizer = ResponseFeaturizer()
    assert table.features.shape == (3, 4, len(FEATURE_NAMES)) and table.agreement.shape == (3, 4, 4)
    for i in range(3):
        for j in range(4):
            for k in range(4):
                expected = j != k and bool(featurizer.agreement([responses[i, j]], [responses[i, k]])[0])
                assert table.agreement[i, j, k] == expected
    assert table.agreement[0, 0, 1] and table.agreement[1, 2, 3] and table.agreement[2, 0, 2]
    np.testing.assert_array_equal(table.subset(np.array([2])).answers, table.answers[[2]])


def test_read_responses_routerbench_decodes_list_strings(routerbench: Path) -> None:
    log = load_log(routerbench).log
    responses = read_responses(routerbench, log)
    assert responses.shape == (log.n_queries, log.n_models)
    assert not any(text.startswith("['") for text in responses.ravel().tolist())
    arc = np.flatnonzero(log.tasks == "arc-challenge")
    gpt4 = log.models.index("gpt-4-1106-preview")
    letters = [text.strip() in {"A", "B", "C", "D", "E"} for text in responses[arc, gpt4].tolist()]
    assert len(letters) > 500 and np.mean(letters) > 0.95  # GPT-4 answers the multiple choice with a letter


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_read_responses_takes_the_accepted_row_of_each_outcome(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"query_id": "q1", "query": "1+1?", "model": "m0", "quality": None, "cost": 0.1, "response": "blank copy"},
        {"query_id": "q1", "query": "1+1?", "model": "m0", "quality": 1, "cost": 0.1, "response": "2"},
        {"query_id": "q1", "query": "1+1?", "model": "m1", "quality": 0, "cost": 0.2, "response": "3"},
        {"query_id": "q1", "query": "1+1?", "model": "m1", "quality": 1, "cost": 0.2, "response": "duplicate"},
        {"query_id": "q2", "query": "2+2?", "model": "m0", "quality": 1, "cost": 0.1, "response": None},
        {"query_id": "q2", "query": "2+2?", "model": "m1", "quality": 1, "cost": 0.2, "response": "4"},
    ]
    path = _write_jsonl(tmp_path / "log.jsonl", rows)
    log = load_log(path).log
    responses = read_responses(path, log)
    assert responses.tolist() == [["2", "3"], ["", "4"]]
    assert read_responses(path, log.subset(np.array([1]))).tolist() == [["", "4"]]


def test_read_responses_refuses_a_log_without_them(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"query_id": "q1", "query": "hi", "model": m, "quality": 1, "cost": 0.1} for m in ("m0", "m1")
    ]
    path = _write_jsonl(tmp_path / "log.jsonl", rows)
    with pytest.raises(DataError, match="has no responses"):
        read_responses(path, load_log(path).log)
    rows[1]["response"] = "hello"
    path = _write_jsonl(tmp_path / "some.jsonl", rows)
    with pytest.raises(DataError, match=r"1 outcome.*query_id 'q1' model 'm0'"):
        read_responses(path, load_log(path).log)
