"""The import map runs one way: data -> policies -> algos / eval -> app (cli, loop, api). Checked from the
code's imports (module level and inside functions), so a shortcut that creates a circle fails here."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "robolearn"
# layer of each top-level part of the package; a module may import its own layer or below
LAYERS = {
    "errors": 0,
    "signals": 0,
    "threads": 0,
    "fileutil": 0,
    "seeds": 0,
    "envutil": 0,
    "config": 0,
    "data": 0,
    "policies": 1,
    "algos": 2,
    "eval": 2,
    "teleop": 2,
    "recording": 2,
    "scale": 2,  # Ray: eval (backend=ray) and finetune (actors=N) use it; the sweep runs commands by name
    "cli": 3,
    "loop": 3,
    "api": 3,
}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "robolearn" or len(parts) < 2:
        return None  # `import robolearn` (env registration) and third-party modules
    return LAYERS.get(parts[1])


def violations(source: str, module: str) -> list[str]:
    """'<module> (layer a) imports <other> (layer b)' for every import that goes up the layers."""
    own = _layer(module)
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + (
                [f"{node.module}.{a.name}" for a in node.names] if node.module == "robolearn" else []
            )
        else:
            continue
        for n in names:
            lay = _layer(n)
            if own is not None and lay is not None and lay > own:
                bad.append(f"{module} (layer {own}) imports {n} (layer {lay}), line {node.lineno}")
    return bad


def _modules():
    for p in sorted(ROOT.rglob("*.py")):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        yield ".".join(rel.parts).removesuffix(".__init__"), p


def test_every_module_has_a_layer():
    unknown = sorted({m.split(".")[1] for m, _ in _modules() if m != "robolearn" and _layer(m) is None})
    assert not unknown, f"give these parts of robolearn a layer in LAYERS: {unknown}"


def test_imports_go_one_way():
    bad = [v for m, p in _modules() if m != "robolearn" for v in violations(p.read_text(), m)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("where", ["algos.bc", "eval.runner", "policies.policy", "data.store"])
def test_the_check_catches_a_cli_import(where):
    for src in (
        "from robolearn.cli import compose\n",
        "def f():\n    import robolearn.cli\n",
        "from robolearn import loop\n",
    ):
        assert violations(src, f"robolearn.{where}"), (where, src)
