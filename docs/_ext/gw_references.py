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

import importlib
import inspect
import sys

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
            if hasattr(found, name):
                found = getattr(found, name)
            elif inspect.isclass(found) and any(
                name in getattr(base, "__annotations__", {}) for base in found.__mro__
            ):
                found = FIELD
            else:
                return MISSING
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
    """``module.target`` when exactly one object of the package's loaded modules is called
    ``target`` (a docstring documented under another module than its own names its own
    module's objects by their short names)."""
    head, _, rest = target.partition(".")
    if not head.isidentifier() or head.startswith("_"):
        return []
    owners: dict[int, str] = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("gradcam_widget.") and head in vars(module):
            value = vars(module)[head]
            if getattr(value, "__module__", name) == name:  # defined there, not imported
                owners.setdefault(id(value), name)
    if len(owners) != 1:
        return []
    return [f"{next(iter(owners.values()))}.{target}"]


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
        if key is None:  # a value: the documented module that holds this very object
            last = name.rpartition(".")[2]
            for module_name, module in self.modules.items():
                if getattr(module, last, MISSING) is found:
                    key = f"{module_name}.{last}"
                    break
        for option in (name, key):
            if option and option in self.by_name:
                return self.by_name[option], None
        return None, key

    def should_have(self, found, key: str | None) -> bool:
        """Whether ``found`` (named ``key``) is a public function or class of a module the
        site documents. (A module's constants have no entries: they are named as code.)"""
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
