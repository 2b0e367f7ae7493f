"""The package's shape, read from its source: the import graph (imports inside functions
included) is acyclic and respects the layers, backend libraries stay in the engines, no
private name crosses a module, no module is hidden by a function, no file grows past its
bound, and every module has its test file."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gradcam_widget as gw
from gradcam_widget import _aliases

PACKAGE = Path(gw.__file__).parent
TESTS = Path(__file__).parent

LAYERS = (
    ("options", "_quiet", "_text", "_aliases", "_version"),
    ("cam", "data.scenes", "data.images", "data.render", "data"),
    ("engine",),
    ("captures", "data.models"),
    ("checks",),
    ("explorer",),
    ("classroom", "auditing"),
    ("commands", "__main__"),
)
"""The package's layers, lowest first, by module-name prefix (the longest prefix decides): a
module imports only from its own layer or a lower one. ``data.models`` sits above ``captures``
because a loaded model scores through the capture's request gate; the rest of ``data`` needs no
model at all."""

BACKENDS = {
    "tensorflow": "engine",
    "jax": "engine",
    "torch": "engine",
    "ray": "auditing.ray",
    "solara": "classroom",
    "uvicorn": "classroom",
    "starlette": "classroom",
}
"""Each backend library and the only part of the package that may import it."""


MAX_LINES = 600
"""A file longer than this states why at its top, in a line that starts ``Longer than``."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()  # "" is the package's own __init__


def _resolve(name: str) -> str:
    """A dotted name under gradcam_widget (without the prefix) as the module it imports."""
    head, _, rest = name.partition(".")
    if head in _aliases.MOVED:
        name = _aliases.MOVED[head] + (f".{rest}" if rest else "")
    return name


def _imports(path: Path, module: str) -> list[tuple[str, str, int]]:
    """``(imported module, name, line)`` for each gradcam_widget import in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "gradcam_widget":
                    found.append(("", "gradcam_widget", node.lineno))  # the package's face
                elif alias.name.startswith("gradcam_widget."):
                    target = _resolve(alias.name.removeprefix("gradcam_widget."))
                    found.append((target, "", node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module == "gradcam_widget":
                source = ""
            elif (node.module or "").startswith("gradcam_widget."):
                source = _resolve(node.module.removeprefix("gradcam_widget."))
            else:
                continue
            for alias in node.names:
                sub = _resolve(f"{source}.{alias.name}" if source else alias.name)
                if sub in MODULES:
                    found.append((sub, "", node.lineno))  # a module, by name
                else:
                    found.append((source, alias.name, node.lineno))
    return found


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        graph[module] = {target for target, _, _ in _imports(path, module) if target != module}
    return graph


def _layer(module: str) -> int:
    best, rank = -1, None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"gradcam_widget.{module} is in no layer of LAYERS"
    return rank


def test_the_import_graph_has_no_cycle():
    graph = {module: targets - {""} for module, targets in _graph().items() if module}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module):
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_every_import_goes_to_its_own_layer_or_a_lower_one():
    wrong = []
    for module, path in MODULES.items():
        if not module:
            continue  # the package's face imports what it offers
        for target, name, line in _imports(path, module):
            if target == "":
                wrong.append(f"{module}:{line} imports {name!r} from the package's __init__")
            elif _layer(target) > _layer(module):
                wrong.append(f"{module}:{line} (layer {_layer(module)}) imports {target} "
                             f"(layer {_layer(target)})")  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_no_private_name_is_imported_from_another_module():
    wrong = [
        f"{module}:{line} imports {name} from {target}"
        for module, path in MODULES.items()
        for target, name, line in _imports(path, module)
        if name.startswith("_") and not name.startswith("__") and target != module
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_module_is_imported_from_another_folder():
    wrong = []
    for module, path in MODULES.items():
        folder = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for target, _, line in _imports(path, module):
            private = any(part.startswith("_") for part in target.split("."))
            if private and target.rpartition(".")[0] not in ("", folder):
                wrong.append(f"{module}:{line} imports the private module {target}")
    assert not wrong, "\n".join(wrong)


def _library_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
            quiet_tf = node.module in ("gradcam_widget.engine._tf", "gradcam_widget._tf") or (
                node.module in ("gradcam_widget.engine", "gradcam_widget")
                and any(alias.name == "_tf" for alias in node.names)
            )
            if quiet_tf:
                names.append("tensorflow")  # the quiet TensorFlow of the engines
        found.update(name.split(".")[0] for name in names)
    return found & set(BACKENDS)


def test_backend_libraries_are_imported_only_where_their_runner_lives():
    wrong, users = [], {library: set() for library in BACKENDS}
    for module, path in MODULES.items():
        for library in _library_imports(path):
            users[library].add(module)
            allowed = BACKENDS[library]
            if not (module == allowed or module.startswith(allowed + ".")):
                wrong.append(f"gradcam_widget.{module} imports {library}")
    assert not wrong, "\n".join(wrong)
    assert {"engine.tf", "engine.jax", "engine.torch", "auditing.ray"} <= set().union(
        *users.values()
    )


def test_no_module_is_hidden_by_a_function_of_the_same_name():
    for module in MODULES:
        head = module.split(".")[0]
        optional = {"engine.jax": "jax", "engine.torch": "torch", "auditing.ray": "ray"}.get(module)
        if not head or (optional and importlib.util.find_spec(optional) is None):
            continue
        if module == "classroom.page":  # imports Solara, which patches comm for the process
            continue  # (imported in a fresh Python by the test below and tests/classroom)
        loaded = importlib.import_module(f"gradcam_widget.{module}")
        parent = importlib.import_module(f"gradcam_widget.{module}".rpartition(".")[0])
        leaf = module.rpartition(".")[2]
        if leaf in vars(parent):
            assert vars(parent)[leaf] is loaded, f"gradcam_widget.{module} is hidden"


def test_no_file_is_longer_than_the_bound_without_saying_why():
    long = []
    for path in MODULES.values():
        text = path.read_text()
        if text.count("\n") > MAX_LINES and "Longer than" not in text[:3000]:
            long.append(f"{path.relative_to(PACKAGE.parent)}: {text.count(chr(10))} lines")
    assert not long, "\n".join(long)


def test_every_module_has_its_test_file():
    missing = []
    for path in MODULES.values():
        if path.name == "__init__.py":
            continue
        folder = path.parent.relative_to(PACKAGE)
        name = "main" if path.stem == "__main__" else path.stem.lstrip("_")
        if not (TESTS / folder / f"test_{name}.py").exists():
            missing.append(str(Path("tests") / folder / f"test_{name}.py"))
    assert not missing, "no test file for: " + ", ".join(missing)


@pytest.mark.slow
def test_each_module_imports_first_in_a_fresh_package():
    """An import cycle the graph cannot see (a folder's lazy ``__getattr__``) shows when a
    module is the first one of the package imported: each is, in turn, in one process."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(m for m in MODULES if m)!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'gradcam_widget']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module('gradcam_widget.' + name)\n"
        "    except ImportError as error:\n"
        "        if 'No module named' not in str(error) or 'gradcam_widget' in str(error):\n"
        "            failed.append(f'{name}: {error}')\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=PACKAGE.parent,
        env={**os.environ, "PYTHONPATH": str(PACKAGE.parent), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", done.stdout
