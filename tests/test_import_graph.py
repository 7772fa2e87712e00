"""The package's import structure: one-way dependencies, no private names across modules.

Every ``import`` of the package's sources is read with ``ast`` (module level and inside functions alike, since a
function-level import is a dependency too), and the rules of the project are checked:

- the import graph of ``sb3_meta`` modules has no cycle;
- no module imports another module's underscore names;
- ``sb3_meta.common.utils`` imports nothing from the package; envs know nothing of algorithms (they import only
  ``sb3_meta.envs`` and ``sb3_meta.common.utils``); evaluation imports no algorithm (neither the base class nor
  MAML/Reptile).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sb3_meta"


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def read_imports(root: pathlib.Path) -> dict[str, list[tuple[str, list[str], int]]]:
    """module -> [(imported sb3_meta module, names imported from it, line)]."""
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    imports: dict[str, list[tuple[str, list[str], int]]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = []
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found += [(alias.name, [], node.lineno) for alias in node.names if alias.name.startswith(root.name)]
            elif isinstance(node, ast.ImportFrom):
                target = node.module or ""
                if node.level:  # relative import
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                if not target.startswith(root.name):
                    continue
                names = [alias.name for alias in node.names]
                submodules = [n for n in names if f"{target}.{n}" in modules]  # "from pkg import submodule"
                found += [(f"{target}.{n}", [], node.lineno) for n in submodules]
                found.append((target, [n for n in names if n not in submodules], node.lineno))
        imports[name] = found
    return imports


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def violations(root: pathlib.Path) -> list[str]:
    """Every broken rule, as a readable line (empty when the structure is sound)."""
    imports = read_imports(root)
    problems = []
    graph: dict[str, set[str]] = {}
    for module, entries in imports.items():
        for target, names, line in entries:
            if target == module:
                continue
            # "from sb3_meta.envs import X" depends on the package __init__, which is not a cycle by itself
            # when module is inside that package; count edges between distinct non-ancestor modules only
            if not module.startswith(target + "."):
                graph.setdefault(module, set()).add(target)
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{module}:{line} imports private names {private} from {target}")
            if module == f"{root.name}.common.utils":
                problems.append(f"{module}:{line} imports {target}: small helpers import nothing from the package")
            if module.startswith(f"{root.name}.envs") and not (
                target.startswith(f"{root.name}.envs") or target == f"{root.name}.common.utils"
            ):
                problems.append(f"{module}:{line} imports {target}: envs know nothing of algorithms")
            if module == f"{root.name}.common.evaluation" and target in (
                f"{root.name}.common.base_class",
                f"{root.name}.maml",
                f"{root.name}.maml.maml",
                f"{root.name}.reptile",
                f"{root.name}.reptile.reptile",
            ):
                problems.append(f"{module}:{line} imports {target}: evaluation knows nothing of a specific algorithm")
    cycle = find_cycle(graph)
    if cycle is not None:
        problems.append("import cycle: " + " -> ".join(cycle))
    return problems


def test_import_structure_is_one_way():
    assert violations(PACKAGE) == []


def test_checker_finds_cycles_and_private_imports(tmp_path):
    """The checker itself: a cycle through a function-level import and a private import are both reported."""
    pkg = tmp_path / "sb3_meta"
    (pkg / "common").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "common" / "__init__.py").write_text("")
    (pkg / "common" / "a.py").write_text("from sb3_meta.common.b import _helper\n")
    (pkg / "common" / "b.py").write_text("def f():\n    from sb3_meta.common import a\n")
    (pkg / "common" / "utils.py").write_text("from sb3_meta.common import b\n")
    found = violations(pkg)
    assert any("private names ['_helper']" in p for p in found)
    assert any(p.startswith("import cycle:") and "sb3_meta.common.a" in p and "sb3_meta.common.b" in p for p in found)
    assert any("small helpers import nothing" in p for p in found)


@pytest.mark.parametrize("module", ["sb3_meta", "sb3_meta.common.evaluation", "sb3_meta.envs"])
def test_import_does_not_load_mujoco(module):
    """A point-mass user never imports MuJoCo: the MuJoCo envs load on first use (gymnasium registration needs
    only their entry-point strings)."""
    import subprocess
    import sys

    code = f"import sys, {module}; assert 'mujoco' not in sys.modules, sorted(m for m in sys.modules if 'mujoco' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)
