"""The package's shape is part of its design: data flows one way, modules stay small, one tool per adapter."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_overlord_db"

# settings -> server -> migrator -> template -> runtime -> per-test connections -> pytest and the CLI.
LAYERS = [
    {"errors", "urls", "polling", "sqltext", "inifile", "declarations", "serverconf", "config", "interrupts", "watch"},
    {"servers"},
    {"migrators"},
    {"seeds", "leases", "template", "catalog", "tabledata", "schema", "incremental", "walwatch", "datagen"},
    {"verdicts", "walker", "seedwalk", "fullcycle", "roundtrip", "github", "runtime", "stepper"},
    {"connections", "isolation"},
    {"plugin", "cli", "cli_cache", "cli_output", "api"},
]


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"module {module!r} has no place in the layers; add it to LAYERS")


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).with_suffix("")
        parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
        if parts:  # the package's own __init__ is the public facade (its lazy ensure_migrations import)
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    """Modules of this package that ``name`` imports, anywhere in it (lazy imports too)."""
    package = name.split(".")[:-1] if not path.name == "__init__.py" else name.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names if not node.module else [None]:
                found.add(target if alias is None else ".".join(filter(None, [target, alias.name])))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_overlord_db."):
            found.add(node.module.removeprefix("pytest_overlord_db."))
    return {f for f in found if f}


def test_no_import_runs_back_up_the_data_flow():
    known = set(modules())
    wrong = []
    for name, path in modules().items():
        for target in imports_of(name, path):
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]  # `from . import urls` names a module; `from .x import y` an object
            if target in known and layer_of(target) > layer_of(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_nothing_outside_migrators_imports_yoyo():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "migrators" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{path.name}: {n}" for n in names if n == "yoyo" or n.startswith("yoyo.")]
    assert not offenders, offenders


def test_no_module_is_much_over_300_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 330} == {}


def test_the_layer_check_catches_an_upward_import(tmp_path):
    # The check must be able to fail: a server module importing the template is an upward import.
    fake = tmp_path / "servers" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("from ..template import Templates\n")
    assert imports_of("servers.bad", fake) == {"template"}
    assert layer_of("template") > layer_of("servers")
