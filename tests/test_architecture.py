"""The import direction of ARCHITECTURE.md, checked on the source: a module imports only layers
above its own (and, inside ``maskwise.attention``, only the modules before it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "maskwise"

# Package layers, top (imported by everything) to bottom; a module may import its own layer's
# siblings only where listed in SAME_LAYER_OK.
LAYERS = [
    {"_checks", "random"},
    {"functional"},
    {"dynamic"},
    {"attention"},
    {"nn", "collators", "monitor", "packing"},
    {"integrations"},
    {"experiments"},
    {"cli", "__main__"},
]
SAME_LAYER_OK = {("__main__", "cli")}  # `python -m maskwise` runs the command
ATTENTION_ORDER = [
    {"base"},
    {"lowering"},
    {"spec"},
    {"positional", "batched", "dropkey"},
    {"specs"},
    {"attend"},
    {"modules"},
]


def _layer(name: str, layers: list[set[str]]) -> int:
    for i, names in enumerate(layers):
        if name in names:
            return i
    raise AssertionError(f"{name} is in no layer of ARCHITECTURE.md")


def _imports(path: Path) -> set[str]:
    """The ``maskwise.*`` modules a file imports (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("maskwise"):
                out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("maskwise")}
    return out


def _files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p != SRC / "__init__.py")


def _top(path: Path) -> str:
    return path.relative_to(SRC).parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_one_way(path: Path) -> None:
    own = _top(path)
    mine = _layer(own, LAYERS)
    for module in _imports(path):
        parts = module.split(".")
        if len(parts) < 2 or parts[1] == own:
            continue
        other = _layer(parts[1], LAYERS)
        assert other < mine or (other == mine and (own, parts[1]) in SAME_LAYER_OK), (
            f"{path.relative_to(SRC)} imports {module}: layer {parts[1]} is not above {own}"
        )


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (SRC / "attention").glob("*.py") if p.name != "__init__.py"),
    ids=lambda p: p.name,
)
def test_attention_modules_import_only_earlier_ones(path: Path) -> None:
    mine = _layer(path.stem, ATTENTION_ORDER)
    for module in _imports(path):
        if module.startswith("maskwise.attention."):
            other = _layer(module.split(".")[2], ATTENTION_ORDER)
            assert other < mine, f"attention/{path.name} imports {module}"


def test_no_source_file_is_much_over_600_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n for p in _files() if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, long
