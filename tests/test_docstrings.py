"""Every public name of the package, subpackages included, carries a docstring (numpydoc style,
checked loosely here; ``mkdocs build --strict`` parses them all for the API reference)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import freenets


def public_names():
    for info in pkgutil.walk_packages(freenets.__path__, prefix="freenets."):
        module = importlib.import_module(info.name)
        yield module.__name__, module
        for name, value in vars(module).items():
            if name.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(value):
                yield f"{module.__name__}.{name}", value
            elif inspect.isclass(value):
                yield f"{module.__name__}.{name}", value
                for member, attribute in vars(value).items():
                    if member.startswith("_"):
                        continue
                    if inspect.isfunction(attribute) or isinstance(attribute, property):
                        # getattr so an override inherits its base's docstring, as inspect does
                        yield f"{module.__name__}.{name}.{member}", getattr(value, member)


def test_every_module_is_visited():
    names = {name for name, _ in public_names()}
    assert {"freenets.graph", "freenets.rules.base", "freenets.training.loop"} <= names


def test_every_public_name_has_a_docstring():
    missing = [name for name, value in public_names() if not (inspect.getdoc(value) or "").strip()]
    assert not missing, f"public names without a docstring: {missing}"
