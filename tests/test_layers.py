"""The package's layer order (tether/__init__.py): every import of a tether module points down or stays
inside its own package. Imports inside functions count: a lazy import is an import too."""

import ast
from pathlib import Path

import tether

PACKAGE = Path(tether.__file__).parent

# From the ground floor up; a module may import its own package and any lower floor, nothing else.
FLOORS = (
    ("errors", "io"),
    ("config", "runlog"),
    ("algos", "data"),
    ("rollout",),
    ("models",),
    ("worlds", "analysis"),
    ("distributed", "label"),
    ("pipelines",),
    ("cli",),
    ("__main__",),
)
FLOOR = {part: k for k, parts in enumerate(FLOORS) for part in parts}


def part_of(module: str) -> str:
    """'tether.data.collate' -> 'data'; 'tether' -> '' (the package docstring only)."""
    return module.split(".")[1] if "." in module else ""


def tether_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `import tether...` / `from tether... import` in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tether"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tether":
            if node.module == "tether":  # `from tether import data`
                found += [(node.lineno, f"tether.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield path, ".".join(p for p in rel.parts if p != "__init__")


def test_every_part_of_the_package_has_a_floor():
    parts = {part_of(name) for _, name in modules()} - {""}
    assert parts <= set(FLOOR), f"parts without a floor in FLOORS: {sorted(parts - set(FLOOR))}"


def test_no_import_points_up_or_sideways():
    wrong = []
    for path, name in modules():
        here = part_of(name)
        for line, target in tether_imports(path):
            there = part_of(target)
            if there == here or there == "":
                continue
            if FLOOR[there] >= FLOOR[here]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {here} (floor {FLOOR[here]}) imports "
                             f"{target} (floor {FLOOR[there]})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_checker_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from tether.pipelines import ppo\n    import tether.cli\n")
    assert tether_imports(source) == [(2, "tether.pipelines"), (3, "tether.cli")]


def test_the_package_docstring_states_the_same_order():
    doc = " ".join(tether.__doc__.split())
    positions = [doc.find(" / ".join(parts)) for parts in FLOORS]
    assert -1 not in positions, f"tether/__init__.py docstring must list each floor as in FLOORS: {FLOORS}"
    assert positions == sorted(positions, reverse=True), "the docstring lists the floors from the top down"
