"""Train a routing policy from logged (query, model, quality, cost) outcomes.

    python train.py                                  # configs/default.yaml: demo data, LinUCB
    python train.py --config configs/routerbench.yaml --out runs/rb
    python train.py --data data/external/routerbench --set reward.cost_weight=30

Writes the run directory of docs/contracts.md §3: policy.pt, report.json, report.md, config.yaml,
rejected.jsonl and tb/ (TensorBoard). Exit status: 0 success, 2 bad input or configuration
(one line, no traceback), 1 anything else.
"""

from training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
