"""The package's structure: the floors, no import cycles, module sizes, and explicit layer classes.

Imports are read from the source (every ``import`` statement, also inside functions and
``TYPE_CHECKING`` blocks), so these checks see what a reader sees.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from kanzoo.layers import BENCH_KWARGS, BOTTLENECK_FAMILIES, FAMILIES, register_family
from kanzoo.layers.registry import add_conv

PACKAGE = Path(__file__).resolve().parent.parent / "kanzoo"
FLOORS = ("layers", "models", "hub", "tasks", "cli")
BESIDE = {"inspect": "models"}  # packages beside a floor: kanzoo.inspect imports layers, models, kanzoo.atomic
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = ["kanzoo", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> set[str]:
    """The kanzoo modules ``name`` imports (``from package import module`` counts as the module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names}
    return {module for module in found if module in MODULES and module != name}


def _floor(name: str) -> int | None:
    parts = name.split(".")
    package = BESIDE.get(parts[1], parts[1]) if len(parts) > 1 else None
    return FLOORS.index(package) if package in FLOORS else None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_floor_imports_a_higher_one(name: str) -> None:
    own = _floor(name)
    if own is None:
        return
    upward = sorted(m for m in _imports(name) if (_floor(m) or 0) > own)
    assert not upward, f"{name} (floor {FLOORS[own]}) imports higher floors: {upward}"


def test_inspect_sits_beside_the_models_and_the_models_do_not_import_it() -> None:
    inspect_modules = [name for name in MODULES if name.startswith("kanzoo.inspect")]
    assert inspect_modules and all(_floor(name) == FLOORS.index("models") for name in inspect_modules)
    for name in MODULES:
        if name.startswith(("kanzoo.layers", "kanzoo.models")):
            assert not {m for m in _imports(name) if m.startswith("kanzoo.inspect")}, name


def test_runtime_imports_nothing_of_kanzoo() -> None:
    assert _imports("kanzoo.runtime") == set()


def test_no_import_cycles() -> None:
    graph = {name: _imports(name) for name in MODULES}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for child in sorted(graph[name]):
            if state.get(child) == 1:
                cycle = path[path.index(child):] + [child] if child in path else [name, child]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if child not in state:
                visit(child, path + [child])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_short(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it (at most {MAX_LINES})"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_layer_class_has_a_class_statement(family: str) -> None:
    for cls in (*FAMILIES[family], *BOTTLENECK_FAMILIES[family]):
        source = MODULES[cls.__module__].read_text()
        assert re.search(rf"^class {cls.__name__}\(", source, re.MULTILINE), \
            f"{cls.__name__} has no class statement in {cls.__module__}"


def test_registering_a_family_twice_or_out_of_order_is_refused() -> None:
    with pytest.raises(ValueError, match="'kagn' is already registered"):
        register_family("kagn")
    with pytest.raises(ValueError, match="no @register_family names"):
        add_conv("fourier", 1, FAMILIES["kagn"][0])
    with pytest.raises(ValueError, match="order 1d, 2d, 3d"):
        add_conv("kagn", 2, FAMILIES["kagn"][1])


def test_a_family_class_without_dimensions_cannot_be_built() -> None:
    family_class = FAMILIES["kagn"][1].__mro__[1]
    with pytest.raises(TypeError, match=r"get_conv\('kagn', ndim=2\)"):
        family_class(4, 4, 3)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_layer_signatures_show_every_argument(family: str) -> None:
    """``help(KAGNConv2d)`` shows the nn.ConvNd arguments, the family's and the common keyword ones."""
    for cls in (*FAMILIES[family], *BOTTLENECK_FAMILIES[family]):
        params = inspect.signature(cls).parameters
        assert list(params)[:9] == ["in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                                    "groups", "bias", "padding_mode"]
        assert set(BENCH_KWARGS[family]) | {"base_activation", "norm_layer", "dropout", "dtype"} <= set(params)
        assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
        inspect.signature(cls).bind(4, 8, 3, padding=1, **BENCH_KWARGS[family])
