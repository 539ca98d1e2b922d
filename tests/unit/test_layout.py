"""The package's structure, read from the source: what a claim module may import."""

import ast
from pathlib import Path

import pytest

import normexp
from normexp.analysis.claims import claim_modules

ANALYSIS = Path(normexp.__file__).parent / "analysis"
CLAIMS = ANALYSIS / "claims"


def imported_modules(path: Path) -> set[str]:
    """The normexp modules a file imports, at any depth of its code, as dotted names (a name
    imported from a package counts as that package's module of the name)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("normexp"):
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("normexp")}
    return names


@pytest.mark.parametrize("module", claim_modules())
def test_no_claim_module_imports_another(module):
    # A claim reads another's outcome through the registry (claims.analysis_named), and the
    # numbers it compares with from analysis/verdict/anchors.py: never from another claim's module.
    others = {f"normexp.analysis.claims.{m}" for m in claim_modules()} - {
        f"normexp.analysis.claims.{module}"
    }
    assert imported_modules(CLAIMS / f"{module}.py") & others == set()


REPORT_SIDE = sorted(
    str(p.relative_to(ANALYSIS).with_suffix(""))
    for p in [*(ANALYSIS / "report").glob("*.py"), ANALYSIS / "figures.py", ANALYSIS / "explore.py"]
)


@pytest.mark.parametrize("module", REPORT_SIDE)
def test_report_side_modules_read_claims_through_the_registry(module):
    claims = {f"normexp.analysis.claims.{m}" for m in claim_modules()}
    assert imported_modules(ANALYSIS / f"{module}.py") & claims == set()


def test_the_import_reader_sees_each_form_of_import(tmp_path):
    source = tmp_path / "x.py"
    source.write_text(
        "from normexp.analysis import a, b\n"
        "import normexp.analysis.c\n"
        "def f():\n    from normexp.analysis.claims.d import thing\n"
    )
    found = imported_modules(source)
    assert {"normexp.analysis.a", "normexp.analysis.b", "normexp.analysis.c"} <= found
    assert "normexp.analysis.claims.d" in found


# The layers of the package, lowest first: a module imports only modules of its own layer or
# below (data flow, one way: config -> data + model(+norm) -> train -> store -> analysis ->
# report). A module is placed by the longest dotted prefix listed; docs/development.md draws it.
LAYERS = (
    # vocabulary: the rules a config obeys, errors, the metric and experiment catalogues
    ("errors", "rules", "validate_fields", "stopping", "catalogue", "metrics", "compose"),
    # the LR protocol's rules and a job's overrides, pure functions
    ("protocol.select", "protocol.subgrid", "protocol.overrides"),
    ("norms",),
    ("models", "data"),
    ("train",),
    ("tasks", "protocol.pack"),  # every task, from the train modules; which runs pack
    ("tracking",),  # the store, collect, the W&B mirror
    ("protocol.grouping",),  # GN's grouping decided from the store, read by the planner
    ("schema", "console"),  # every config field, from every registry
    ("validate",),
    ("protocol.plan", "job"),
    ("run", "sweep"),
    # analysis, in the order of its pipeline: tables -> statistics -> figures' look -> verdict
    # machinery -> shared curves -> claims -> the report -> the pipeline that runs them
    ("analysis.one_scale",),  # one scale per figure and statistic: the columns refuse two
    ("analysis.columns", "analysis.stats"),
    ("analysis.style",),
    ("analysis.verdict",),
    ("analysis.curves",),
    ("analysis.claims",),
    ("analysis.report",),
    ("analysis", "analysis.figures", "analysis.explore"),
    ("bench", "gpu_bundle"),  # tools: nothing in the suite imports them
)
# The norm layers register themselves when the registry loads them (norms.registry._load).
ALLOWED_CYCLES = ({"norms.registry", "norms.layers", "norms.batch_variants", "norms.recurrent",
                   "norms.validity"},)  # fmt: skip
PACKAGE = Path(normexp.__file__).parent


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name without the ``normexp.`` prefix."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """Every node outside ``if TYPE_CHECKING:`` blocks (annotations only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph() -> dict[str, set[str]]:
    modules = module_files()

    def known(name: str) -> str | None:  # normexp.a.b.c -> the longest module it names
        name = name.removeprefix("normexp").lstrip(".")
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in _runtime_nodes(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("normexp"):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("normexp.")]
            graph[module] |= {t for t in map(known, names) if t and t != module}
    return graph


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), i)
        for i, layer in enumerate(LAYERS)
        for prefix in layer
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"normexp.{module} has no layer: place it in LAYERS (tests/unit/test_layout.py)"
    return max(matches)[1]


def test_every_import_goes_down_the_layers():
    upward = [
        f"normexp.{a} (layer {layer_of(a)}) imports normexp.{b} (layer {layer_of(b)})"
        for a, targets in import_graph().items()
        if a  # the package's own __init__ imports nothing
        for b in targets
        if layer_of(b) > layer_of(a)
    ]
    assert upward == []


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import cycles: Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_but_the_norms_self_registration():
    cycles = strongly_connected(import_graph())
    assert [c for c in cycles if c not in ALLOWED_CYCLES] == []


def test_the_layout_reader_finds_an_upward_import_and_a_cycle():
    assert layer_of("analysis.claims.bn_position") > layer_of("norms.registry")
    assert layer_of("protocol.plan") > layer_of("validate") > layer_of("protocol.select")
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
