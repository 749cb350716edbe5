"""Every package the code imports is declared in pyproject.toml, so a fresh install has it."""

import ast
import re
import sys
from importlib.metadata import packages_distributions

import pytest

from conftest import REPO

tomllib = pytest.importorskip("tomllib")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    return {canonical(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def imported_modules() -> set[str]:
    names = set()
    for path in (REPO / "slearn_mlx").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name != "slearn_mlx"}


def test_every_imported_package_is_declared():
    distributions = packages_distributions()
    undeclared = [name for name in imported_modules()
                  if not {canonical(d) for d in distributions.get(name, [name])} & declared()]
    assert not undeclared, f"imported but not in pyproject.toml: {undeclared}"
