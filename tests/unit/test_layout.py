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
    # numbers it compares with from analysis/anchors.py: never from another claim's module.
    others = {f"normexp.analysis.claims.{m}" for m in claim_modules()} - {
        f"normexp.analysis.claims.{module}"
    }
    assert imported_modules(CLAIMS / f"{module}.py") & others == set()


@pytest.mark.parametrize("module", ["report/grid", "report/scales", "report/__init__", "figures"])
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
