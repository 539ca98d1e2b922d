"""The package's structure, read from the source: what a claim module may import."""

import ast
from pathlib import Path

import pytest

import normexp
from normexp.analysis.claims import MODULES, SECTIONS

ANALYSIS = Path(normexp.__file__).parent / "analysis"


def imported_analysis_modules(path: Path) -> set[str]:
    """The normexp.analysis modules a file imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "normexp.analysis":
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "normexp.analysis."
        ):
            names.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[2] for a in node.names if a.name.count(".") >= 2}
    return names


@pytest.mark.parametrize("module", [*MODULES, *SECTIONS, "scales"])
def test_no_claim_module_imports_another(module):
    # A claim reads another's outcome through the registry (claims.analysis_named), and the
    # numbers it compares with from analysis/anchors.py: never from another claim's module.
    others = set(MODULES) - {module}
    assert imported_analysis_modules(ANALYSIS / f"{module}.py") & others == set()


def test_the_import_reader_sees_each_form_of_import(tmp_path):
    source = tmp_path / "x.py"
    source.write_text(
        "from normexp.analysis import a, b\n"
        "import normexp.analysis.c\n"
        "def f():\n    from normexp.analysis.d import thing\n"
    )
    assert imported_analysis_modules(source) == {"a", "b", "c", "d"}
