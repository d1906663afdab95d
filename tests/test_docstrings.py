"""Every public class of the package documents itself with a runnable example.

The examples themselves run as doctests (``--doctest-modules`` in pyproject.toml); this test makes sure none
is missing, so a new public class without one fails CI instead of slipping through review.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import dreamarcade


def _package_modules() -> list[str]:
    names = [dreamarcade.__name__]
    for info in pkgutil.walk_packages(dreamarcade.__path__, prefix=f"{dreamarcade.__name__}."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # importing a CLI entry module would run it
            continue
        names.append(info.name)
    return names


def _public_classes(module_name: str) -> list[type]:
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    classes = []
    for name, obj in vars(module).items():
        if not inspect.isclass(obj) or obj.__module__ != module_name or name.startswith("_"):
            continue
        if exported is not None and name not in exported:
            continue
        classes.append(obj)
    return classes


@pytest.mark.parametrize("module_name", _package_modules())
def test_public_classes_have_a_runnable_example(module_name: str) -> None:
    missing = [cls.__name__ for cls in _public_classes(module_name) if ">>>" not in (cls.__doc__ or "")]
    assert not missing, (
        f"{module_name}: public classes without a runnable example (a '>>>' doctest) in their docstring: "
        f"{missing}. Add an 'Example:' section to each."
    )


def test_the_walk_finds_the_package() -> None:
    modules = _package_modules()
    assert "dreamarcade.wrappers.frames" in modules and "dreamarcade.baselines.dqn" in modules
    names = {cls.__name__ for cls in _public_classes("dreamarcade.wrappers.frames")}
    assert {"GrayscaleResize", "FrameStack", "ClipRewardSign"} <= names
