"""The one-way data flow of docs/architecture.md, checked on the source: no module imports a later room."""

from __future__ import annotations

import ast
from pathlib import Path

import galvae

SRC = Path(galvae.__file__).parent

# The rooms in the order data flows through them, with their rank: a module may import its own room and
# rooms of a lower rank. select and explain share one: both read a trained model, neither imports the other.
ROOMS = [
    ("shared", 0, ("galvae._atomic", "galvae._jsonio", "galvae._lock", "galvae._progress", "galvae._dask",
                   "galvae.likelihood")),
    ("sources", 1, ("galvae.sources",)),
    ("prepare", 2, ("galvae.prepare",)),
    ("models", 3, ("galvae.models",)),
    ("train", 4, ("galvae.fit", "galvae.splits", "galvae.basis_split")),
    ("select", 5, ("galvae.select",)),
    ("explain", 5, ("galvae.explain",)),
    ("report", 6, ("galvae.report",)),
    ("front doors", 7, ("galvae.config", "galvae.run", "galvae.api", "galvae.cli")),
]


def room_of(module: str) -> tuple[str, int]:
    for room, rank, prefixes in ROOMS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return room, rank
    raise AssertionError(f"{module} belongs to no room of docs/architecture.md")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every galvae module ``path`` imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import x` names a module when x is one
                sub = f"{target}.{alias.name}"
                is_module = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists() or \
                    (SRC.parent / sub.replace(".", "/")).is_dir()
                found.add(sub if is_module else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("galvae.")}


def test_no_module_imports_a_later_room():
    backwards = []
    for path in sorted(SRC.rglob("*.py")):
        name = module_name(path)
        if name == "galvae":  # the package's lazy attributes reach the API, on purpose
            continue
        room, rank = room_of(name)
        for target in imports(path):
            other, other_rank = room_of(target)
            if other_rank > rank or (other_rank == rank and other != room):
                backwards.append(f"{name} ({room}) imports {target} ({other})")
    assert not backwards, "\n".join(backwards)


def test_sources_and_prepare_import_neither_torch_nor_the_models():
    for room in ("sources", "prepare"):
        for path in (SRC / room).rglob("*.py"):
            tree = ast.parse(path.read_text())
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
            assert not any(n == "torch" or n.startswith("torch.") for n in names), path
    assert all(not t.startswith("galvae.models") for room in ("sources", "prepare")
               for p in (SRC / room).rglob("*.py") for t in imports(p))
