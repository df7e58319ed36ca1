"""The layers of routerl import only downwards (docs/architecture.md, "Layers").

Every product module is parsed with :mod:`ast` -- nothing is imported -- and every import in it is
checked against the table :data:`ALLOWED`: module-level and function-local imports, ``import a.b``,
``from a import b``, relative ``from . import b`` / ``from ..a import b``, imports under
``if TYPE_CHECKING:`` and ``importlib.import_module("a.b")`` with a literal name all count.

The table, from issue 13 item 8:

- ``data`` imports no other layer;
- ``envs`` imports ``data``;
- ``agents`` imports ``envs``, ``data`` and, of ``policies``, only the heads (``policies.heads``);
- ``policies`` imports ``data`` (lower-layer helpers such as ``data.tokenizer``);
- ``evaluation`` imports ``data``, ``envs`` and ``policies``: never ``training``, and not ``agents`` either
  (it sees a router only as a decision rule, ``decide(cost_weight) -> actions``);
- ``training`` imports every layer but ``serving``;
- ``serving`` imports ``policies`` only, and everything the service reaches through its imports is
  ``serving`` or ``policies``, or ``data.tokenizer`` (the tokenization of the policy contract, which
  the native engine shares with training; it imports nothing of routerl's): the service never loads
  the training packages;
- ``train.py`` imports only ``training``, ``serve.py`` only ``serving``.

Nothing imports the two scripts ``train`` and ``serve``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PACKAGES, ROOT, SCRIPTS, product_files

LAYERS = PACKAGES + SCRIPTS

# layer -> the modules of *other* layers it may import: a layer name allows the whole package, a
# dotted name allows that module (and its submodules) only. A layer may always import itself.
ALLOWED: dict[str, frozenset[str]] = {
    "data": frozenset(),
    "envs": frozenset({"data"}),
    "agents": frozenset({"data", "envs", "policies.heads"}),
    "policies": frozenset({"data"}),
    "evaluation": frozenset({"data", "envs", "policies"}),
    "training": frozenset({"data", "envs", "agents", "policies", "evaluation"}),
    "serving": frozenset({"policies"}),
    "train": frozenset({"training"}),
    "serve": frozenset({"serving"}),
}
# the entry points of the service: all they reach must stay inside these layers, or be one of SERVICE_ALSO
SERVICE_LAYERS = frozenset({"serving", "policies", "serve"})
# the tokenization is part of the policy contract (docs/contracts.md §2.4): the native engine tokenizes a
# batch with the same code as training. data.tokenizer imports nothing of routerl's (checked below).
SERVICE_ALSO = frozenset({"data", "data.tokenizer"})


@dataclass(frozen=True)
class Import:
    """One imported product module: where the import statement stands, and the module's dotted name."""

    path: str
    line: int
    module: str

    @property
    def layer(self) -> str:
        return self.module.split(".")[0]


def module_name(path: Path, root: Path = ROOT) -> str:
    """``agents/ppo.py`` -> ``agents.ppo``; ``agents/__init__.py`` -> ``agents``; ``train.py`` -> ``train``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, root: Path = ROOT) -> bool:
    """Whether ``name`` is a module or package of the tree (``from policies import heads`` imports a module)."""
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _resolve_relative(package: str, level: int, module: str | None) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``package``."""
    parts = package.split(".") if package else []
    if level - 1 >= len(parts):
        raise ValueError(f"relative import beyond the top of the tree in package {package!r}")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _literal_import_module(node: ast.Call) -> str | None:
    """The literal name given to ``importlib.import_module(...)`` / ``import_module(...)`` / ``__import__(...)``."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def imports_of(source: str, path: str, module: str, root: Path = ROOT) -> list[Import]:
    """Every product module that ``source`` (the text of module ``module``, shown as ``path``) imports.

    For ``from a import b`` the imported module is ``a.b`` when that is a module of the tree, else
    ``a`` (``b`` is then a name defined in ``a``). Third-party and standard-library imports are left out.
    """
    is_package = Path(path).name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if not isinstance(node, ast.stmt | ast.expr):
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(package, node.level, node.module) if node.level else node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}" if base else alias.name
                names.append(candidate if alias.name != "*" and is_module(candidate, root) else base)
        elif isinstance(node, ast.Call) and (literal := _literal_import_module(node)) is not None:
            names = [literal]
        found += [Import(path, node.lineno, name) for name in names if name.split(".")[0] in LAYERS]
    return found


def violations(source: str, path: str, module: str, root: Path = ROOT) -> list[str]:
    """One line per import of ``source`` that the table :data:`ALLOWED` forbids, naming file, line and module."""
    layer = module.split(".")[0]
    allowed = ALLOWED[layer]
    lines = []
    for imported in imports_of(source, path, module, root):
        if imported.layer == layer:
            continue
        if not any(imported.module == ok or imported.module.startswith(ok + ".") for ok in allowed):
            may = ", ".join(sorted(allowed)) or "no other layer"
            lines.append(f"{imported.path}:{imported.line}: {layer} imports {imported.module} (allowed: {may})")
    return lines


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_layer_has_product_modules() -> None:
    """The checks below read real files: a renamed package must not turn them into checks of nothing."""
    layers = {module_name(path).split(".")[0] for path in product_files()}
    assert layers == set(LAYERS)
    assert set(ALLOWED) == set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_what_the_table_allows(layer: str) -> None:
    found = [
        line
        for path in product_files()
        if module_name(path).split(".")[0] == layer
        for line in violations(path.read_text(encoding="utf-8"), _relative(path), module_name(path))
    ]
    assert not found, f"{layer} imports across the layering (docs/architecture.md):\n" + "\n".join(found)


def reached_from(entries: list[str], sources: dict[str, tuple[str, str]], root: Path = ROOT) -> dict[str, str]:
    """Every module of ``sources`` (module -> (path, text)) that importing ``entries`` loads, with the import that
    first brings it in (``path:line``). Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``."""
    reached = {name: "(entry point)" for name in entries}
    pending = list(entries)
    while pending:
        name = pending.pop()
        path, text = sources[name]
        for imported in imports_of(text, path, name, root):
            parts = imported.module.split(".")
            for prefix in (".".join(parts[:depth]) for depth in range(1, len(parts) + 1)):
                if prefix in sources and prefix not in reached:
                    reached[prefix] = f"{imported.path}:{imported.line}"
                    pending.append(prefix)
    return reached


def outside_the_service(reached: dict[str, str]) -> list[str]:
    return sorted(
        f"{where}: brings in {name}"
        for name, where in reached.items()
        if name.split(".")[0] not in SERVICE_LAYERS and name not in SERVICE_ALSO
    )


def test_service_reaches_only_serving_and_policies() -> None:
    """Following every import from ``serve.py`` and ``serving/`` stays in ``serving`` and ``policies``.

    ``policies`` may import ``data``, and the service may import ``policies``: this check keeps the
    service's own path (``policies.artifact``, torch only) free of the training packages.
    """
    sources = {module_name(path): (_relative(path), path.read_text(encoding="utf-8")) for path in product_files()}
    entries = [name for name in sources if name.split(".")[0] in ("serving", "serve")]
    outside = outside_the_service(reached_from(entries, sources))
    assert not outside, "the service reaches training code:\n" + "\n".join(outside)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A stand-in tree with the modules the synthetic sources name, so that the checks below do not
    depend on today's file names (``from policies import arms`` is a module import only if arms.py exists)."""
    modules = ["agents/base", "data/featurizer", "data/schema", "data/tokenizer", "serving/app"]
    modules += ["policies/arms", "policies/export", "policies/heads"]
    for module in modules:
        (tmp_path / module).parent.mkdir(exist_ok=True)
        (tmp_path / module).with_suffix(".py").write_text("")
        (tmp_path / module).parent.joinpath("__init__.py").write_text("")
    return tmp_path


def test_service_check_follows_imports_through_policies(tree: Path) -> None:
    """A service module that imports a policies module that imports ``data`` is caught, through the chain
    (the package ``data`` itself is allowed, for ``data.tokenizer``)."""
    sources = {
        "serving": ("serving/__init__.py", ""),
        "serving.app": ("serving/app.py", "import policies.export\n"),
        "policies": ("policies/__init__.py", ""),
        "policies.export": ("policies/export.py", "import json\n\ndef f():\n    from data import featurizer\n"),
        "data": ("data/__init__.py", ""),
        "data.featurizer": ("data/featurizer.py", "import data.schema\n"),
        "data.schema": ("data/schema.py", ""),
    }
    assert outside_the_service(reached_from(["serving.app"], sources, tree)) == [
        "data/featurizer.py:1: brings in data.schema",
        "policies/export.py:4: brings in data.featurizer",
    ]


SYNTHETIC_AGENT = """\
from __future__ import annotations
import importlib
from typing import TYPE_CHECKING

import numpy as np
from data.routing_log import RoutingLog
from envs.routing_env import RoutingEnv
from policies.heads import UtilityHead
from policies import heads
from . import base

if TYPE_CHECKING:
    from evaluation.report import data_section

def fit() -> None:
    import training.run
    from policies import arms
    from serving import app
    importlib.import_module("training.config")
"""


def test_checker_reports_file_line_and_module_of_each_forbidden_import(tree: Path) -> None:
    """The checker on a synthetic ``agents`` module: the allowed imports pass, each forbidden one is named."""
    found = violations(SYNTHETIC_AGENT, "agents/synthetic.py", "agents.synthetic", tree)
    assert found == [
        "agents/synthetic.py:13: agents imports evaluation.report (allowed: data, envs, policies.heads)",
        "agents/synthetic.py:16: agents imports training.run (allowed: data, envs, policies.heads)",
        "agents/synthetic.py:17: agents imports policies.arms (allowed: data, envs, policies.heads)",
        "agents/synthetic.py:18: agents imports serving.app (allowed: data, envs, policies.heads)",
        "agents/synthetic.py:19: agents imports training.config (allowed: data, envs, policies.heads)",
    ]


def test_checker_resolves_relative_imports_and_scripts(tree: Path) -> None:
    """Relative imports stay in their package; data may import nothing else; nothing may import the scripts."""
    assert imports_of("from ..training import run\n", "data/sub/x.py", "data.sub.x", tree) == [
        Import("data/sub/x.py", 1, "data.training")  # inside data, not the training layer
    ]
    assert imports_of("from . import tokenizer\n", "data/__init__.py", "data", tree) == [
        Import("data/__init__.py", 1, "data.tokenizer")
    ]
    assert violations("from . import tokenizer\nimport data.schema\n", "data/x.py", "data.x", tree) == []
    assert violations("import envs\n", "data/x.py", "data.x") == [
        "data/x.py:1: data imports envs (allowed: no other layer)"
    ]
    assert violations("import train\n", "training/x.py", "training.x") == [
        "training/x.py:1: training imports train (allowed: agents, data, envs, evaluation, policies)"
    ]
    assert violations("from data.schema import DataError\n", "train.py", "train") == [
        "train.py:1: train imports data.schema (allowed: training)"
    ]
