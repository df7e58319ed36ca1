"""Training runs: from a log and a configuration to a learned agent, its report and ``policy.pt``.

Imports every layer but :mod:`serving` (docs/architecture.md); ``train.py`` imports only this package.
Modules:

- :mod:`training.run` -- one run end to end: read, split, featurize, learn, evaluate, export, report.
- :mod:`training.cli` -- ``train.py``'s command line: flags, overrides, exit statuses.
- :mod:`training.config` -- the run configuration: typed dataclasses from YAML with ``--set`` overrides.
- :mod:`training.factory` -- ``agent.kind`` to a fresh, configured agent (through ``agents.registry``).
- :mod:`training.inputs` -- what the run's stages hand each other.
- :mod:`training.learning` -- how the agent learns: ``train`` with the run's callbacks, resumed if checkpointed.
- :mod:`training.checkpoints` -- the one checkpoint file (learner and keep-best state) and the resume path.
- :mod:`training.tensorboard` -- TensorBoard logging, and the callback learners log through.
- :mod:`training.exporting` -- the run's ``policy.pt`` and its metadata.
- :mod:`training.compare` -- agents compared by K-fold cross-validation.
- :mod:`training.search` -- hyperparameter search: a grid of configurations run in turn or as Ray Tune trials.
- :mod:`training.distributed` -- exact LinUCB fitting on Ray (``train.py --ray``).
- :mod:`training.blocks` -- what the Ray workers run on each block of a log.
"""
