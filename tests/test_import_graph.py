"""The engine's modules import each other without cycles, and each imports on its own.

A cycle works or breaks depending on which module a user happens to import first; these tests make the
order irrelevant: the module-level import graph (read from the source, not executed) has no cycle, and
every module imports in an interpreter where no other engine module was imported before it.
"""
import ast
import subprocess
import sys
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def module_name(path: Path) -> str:
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def imports_at_module_level(name: str, path: Path) -> set[str]:
    """Engine modules `name` imports when it is imported (function-level imports run later, so they
    cannot close a cycle at import time). Under `if TYPE_CHECKING:` nothing is imported."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}  # `from . import masks` imports a module
    return {m for m in out if m in MODULES and m != name}


def test_engine_import_graph_has_no_cycle():
    graph = {name: imports_at_module_level(name, path) for name, path in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name)
    assert graph["engine.config"] <= {"engine.errors", "engine.registry"}, "config.py must stay a leaf"
    assert graph["engine.registry"] <= {"engine.errors"}


def test_every_engine_module_imports_first():
    """Each module imported with no engine module loaded before it (third-party ones stay cached: the
    engine's own import order is what is tested, in one interpreter to keep it fast)."""
    code = (
        "import sys, importlib, traceback\n"
        f"names = {sorted(MODULES)!r}\n"
        "bad = []\n"
        "for name in names:\n"
        "    for m in [m for m in sys.modules if m == 'engine' or m.startswith('engine.')]:\n"
        "        del sys.modules[m]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ENGINE.parent, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
