"""No import cycles in ponder_jax/, and every module imports.

The graph is read with `ast` from the source, so it is fast and deterministic and sees every
import statement at any depth: a cycle hidden by a function-level import is still a cycle (two
modules that can only be read, tested and changed together), it only fails later and depending on
which module a process happens to import first. Imports under `if TYPE_CHECKING:` never run and
do not count. A module depends on what it names: `from ponder_jax.data import vocab` on the module
`ponder_jax.data.vocab`, `from ponder_jax.data import data_dir` on the package `ponder_jax.data`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = "ponder_jax"
ROOT = Path(__file__).resolve().parents[1]


def package_modules() -> dict[str, Path]:
  """Every module of the package by dotted name (packages by their own name)."""
  modules = {}
  for path in sorted((ROOT / PACKAGE).rglob("*.py")):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    modules[".".join(parts)] = path
  return modules


def _is_type_checking(node: ast.If) -> bool:
  test = node.test
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
  """Import statements at any depth, skipping `if TYPE_CHECKING:` bodies."""
  stack = [tree]
  while stack:
    node = stack.pop()
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      yield node
    elif isinstance(node, ast.If) and _is_type_checking(node):
      stack.extend(node.orelse)
    else:
      stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
  """The package modules `name` imports, wherever in the file the import statement is."""
  is_package = path.name == "__init__.py"
  found = set()
  for node in _import_nodes(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name in modules)
      continue
    base = node.module or ""
    if node.level:  # relative: resolved against this module's package
      anchor = name.split(".")[:len(name.split(".")) - node.level + is_package]
      base = ".".join(anchor + ([base] if base else []))
    for alias in node.names:
      target = f"{base}.{alias.name}"
      found.add(target if target in modules else base)
  return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
  modules = package_modules()
  return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index, low, on_stack, stack, components = {}, {}, set(), [], []

  def visit(node: str) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in sorted(graph[node]):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        components.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return components


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
  pkg = tmp_path / "pkg"
  (pkg / "sub").mkdir(parents=True)
  for name in ("__init__", "a", "sub/__init__", "sub/b"):
    (pkg / f"{name}.py").write_text("")
  modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.sub": pkg / "sub/__init__.py",
             "pkg.sub.b": pkg / "sub/b.py"}
  (pkg / "sub/b.py").write_text(
      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from pkg import a\n"
      "def f():\n  from .. import a\n  from . import helper\n")
  assert imports_of("pkg.sub.b", modules["pkg.sub.b"], modules) == {"pkg.a", "pkg.sub"}
  assert cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}, "w": {"x"}}) == [["x", "y", "z"]]


def test_import_graph_has_no_cycle():
  graph = import_graph()
  assert len(graph) > 50 and "ponder_jax.data.vocab" in graph
  found = cycles(graph)
  assert not found, ("modules that import each other, directly or through others:\n"
                     + "\n".join(", ".join(c) for c in found))


def test_every_module_imports():
  # One fresh interpreter for all modules: an import error (a moved name, a missing module) fails
  # here rather than in the first test or command that happens to import the module.
  names = sorted(package_modules())
  code = "import importlib, sys\nfor name in sys.argv[1:]:\n  importlib.import_module(name)\n"
  run = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-4000:]
