"""The stages import one way (docs/ARCHITECTURE.md): each rule is checked on every import.

Every module under ``volseg/`` is parsed with :mod:`ast`; imports at module level and inside
functions (lazy imports) count alike, ``if TYPE_CHECKING:`` ones too: a reader meets them all.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "volseg"

# (stage, what it may not import, what it may import despite that)
RULES = [
    ("volseg.io", ["volseg"], ["volseg.io", "volseg.errors"]),
    ("volseg.runtime", ["volseg"], ["volseg.runtime", "volseg.errors"]),
    ("volseg.metrics", ["volseg.models", "volseg.engine"], []),
    ("volseg.inference", ["volseg.engine"], []),
    ("volseg.models", ["volseg.engine", "volseg.cli", "volseg.inference"], []),
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str, root: Path = ROOT) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """The volseg modules ``path`` imports (``from volseg import x`` counts as ``volseg.x``)."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if is_module(full, root) else base)
    return {name for name in found if name == "volseg" or name.startswith("volseg.")}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for imported in sorted(imports_of(path)):
            for stage, banned, allowed in RULES:
                if (
                    within(module, stage)
                    and any(within(imported, b) for b in banned)
                    and not any(within(imported, a) for a in allowed)
                ):
                    found.append(f"{module} -> {imported}")
            cli_user = not within(module, "volseg.cli") and module != "volseg.__main__"
            if cli_user and within(imported, "volseg.cli"):
                found.append(f"{module} -> {imported}")
    return found


def test_stages_import_one_way():
    found = violations()
    print("\n".join(found))
    assert not found, "imports against docs/ARCHITECTURE.md:\n" + "\n".join(found)


def test_the_checker_sees_lazy_relative_and_from_package_imports(tmp_path):
    fake = tmp_path / "volseg" / "io" / "fake.py"
    fake.parent.mkdir(parents=True)
    (tmp_path / "volseg" / "errors.py").write_text("")
    fake.write_text(
        "from volseg import errors\n"
        "def f():\n    from volseg.engine import checkpoint\n    from ..models import build\n"
    )
    assert imports_of(fake, tmp_path) == {"volseg.errors", "volseg.engine", "volseg.models"}
