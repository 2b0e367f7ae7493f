"""References the docstrings make by another name than the one the site documents.

The package's docstrings say ``:func:`capture``` inside a module,
``:class:`gradcam_widget.core.CamResult``` (an old module name, still importable) or
``:func:`gradcam_widget.capture``` (the short name); the site documents each object once, under
one name. When Sphinx does not find
a reference, this resolves it by importing: the name as the docstring's context would read it
(the referring class, its module, its package, the package's top), the object it names, then
the site's entry for that same object (matched by the object's own ``module.qualname``, or,
for a constant, by the documented module that holds it).

A name that is no object of the package stays unresolved and fails the strict build; so does
a public object of a module the site documents that has no entry of its own (it should have
one). A real object of the package's internals (``engine``, ``explorer.session`` ...), which
the site does not document, is shown as code without a link.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util.nodes import make_refnode

MISSING = object()  # what lookup returns for a name that is no object of the package
FIELD = object()  # an annotated attribute with no class-level value (a dataclass field)


def lookup(dotted: str):
    """The object a dotted name of this package names (old module names too), else
    :data:`MISSING`; a class's annotated field with no class-level value is :data:`FIELD`."""
    parts = dotted.split(".")
    if parts[0] != "gradcam_widget" or not all(part.isidentifier() for part in parts):
        return MISSING
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            try:  # a lazy __getattr__ may import, and fail with more than AttributeError
                found = getattr(found, name)
            except Exception:
                if not inspect.isclass(found) or not any(
                    name in getattr(base, "__annotations__", {}) for base in found.__mro__
                ):
                    return MISSING
                found = FIELD
        return found
    return MISSING


def canonical(found) -> str | None:
    """``module.qualname`` of a module, class, function or method (a bound method's
    function); ``None`` for other values."""
    if inspect.ismodule(found):
        return found.__name__
    found = getattr(found, "__func__", found)
    module, qualname = getattr(found, "__module__", None), getattr(found, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and callable(found):
        return f"{module}.{qualname}"
    return None


def candidates(target: str, module: str | None, cls: str | None) -> list[str]:
    """Where a docstring's ``target`` may live: as written; in the referring class (and the
    bases that define it); in the referring module, its package, the package's top."""
    target = target.lstrip("~.")
    if target.startswith("gradcam_widget"):
        return [target]
    found = []
    if module and cls:
        found.append(f"{module}.{cls}.{target}")
        owner = lookup(f"{module}.{cls}")
        if inspect.isclass(owner):
            found.append(f"{owner.__module__}.{owner.__qualname__}.{target}")
            found.append(f"{owner.__module__}.{target}")
            head = target.split(".")[0]
            found += [
                f"{base.__module__}.{base.__qualname__}.{target}"
                for base in owner.__mro__[1:]
                if head in vars(base)
            ]
    if module:
        found.append(f"{module}.{target}")
        if "." in module:
            found.append(f"{module.rpartition('.')[0]}.{target}")
    return [*found, f"gradcam_widget.{target}", *defined_once(target)]


def defined_once(target: str) -> list[str]:
    """``module.target`` when exactly one module of the package defines a function or class
    called ``target``'s first part at its top level (read from the sources, whatever is
    imported): a docstring shown under another module names its own module's objects by
    their short names."""
    head, _, _ = target.partition(".")
    owners = definitions().get(head, [])
    return [f"{owners[0]}.{target}"] if len(owners) == 1 and not head.startswith("_") else []


@functools.cache
def definitions() -> dict[str, list[str]]:
    """Top-level function and class name -> the package's modules that define it."""
    package = Path(importlib.util.find_spec("gradcam_widget").origin).parent
    found: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.setdefault(node.name, []).append(module)
    return found


class Entries:
    """The site's entries, by documented name and by each object's canonical name."""

    def __init__(self, app: Sphinx):
        domain = app.env.get_domain("py")
        self.by_name: dict[str, tuple[str, str]] = {}
        self.modules: dict[str, object] = {}
        for name, entry in domain.objects.items():
            place = (entry.docname, entry.node_id)
            self.by_name.setdefault(name, place)
            found = lookup(name)
            if entry.objtype == "module" and inspect.ismodule(found):
                self.modules[found.__name__] = found
            key = canonical(found) if found is not MISSING else None
            if key is not None:
                self.by_name.setdefault(key, place)

    def find(self, name: str, found) -> tuple[tuple[str, str] | None, str | None]:
        """``(entry or None, the name it should be documented under or None)``."""
        key = canonical(found)
        shared = isinstance(found, (int, float, str, bytes, type(None))) or (
            isinstance(found, tuple) and not found
        )
        if key is None and not shared:  # a value: the documented module holding this object
            last = name.rpartition(".")[2]
            for module_name, module in self.modules.items():
                if vars(module).get(last, MISSING) is found:
                    key = f"{module_name}.{last}"
                    break
        for option in (name, key):
            if option and option in self.by_name:
                return self.by_name[option], None
        return None, key

    def should_have(self, found, key: str | None) -> bool:
        """Whether ``found`` (named ``key``) is a public function or class of a module the
        site documents. (A constant without a doc comment has no entry: it is named as code.)"""
        if key is None or inspect.ismodule(found) or not callable(found):
            return False
        owner = getattr(getattr(found, "__func__", found), "__module__", None)
        if owner not in self.modules:
            return False
        return not any(part.startswith("_") for part in key[len(owner) + 1 :].split("."))


def resolve(app: Sphinx, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    entries = getattr(app, "gw_entries", None)
    if entries is None:  # made once per build, after every page was read
        entries = app.gw_entries = Entries(app)
    for name in candidates(node.get("reftarget", ""), node.get("py:module"), node.get("py:class")):
        found = lookup(name)
        if found is MISSING:
            continue
        if found is FIELD:
            return contnode
        entry, key = entries.find(name, found)
        if entry is not None:
            return make_refnode(app.builder, node["refdoc"], entry[0], entry[1], contnode)
        if entries.should_have(found, key):
            return None  # a public object of a documented module without its entry: warn
        return contnode
    return None


def setup(app: Sphinx) -> dict:
    app.connect("missing-reference", resolve)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
