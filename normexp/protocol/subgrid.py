"""The convergence check's declaration, read one way by the sweep's planner, the cost projection
and the analysis: which cells lie in ``protocol.check`` and at which profiles it runs
(``protocol.check_profiles``). Pure functions over a field lookup, so the planner (a resolved
config) and the analysis (a collected row) apply the same rule."""

from collections.abc import Callable, Mapping


def listed(values: object) -> set[str]:
    """A declared list as strings: "a,b", ["a", "b"], or the repr collect writes, "['a', 'b']"."""
    items = values.strip().strip("[]").split(",") if isinstance(values, str) else list(values)
    return {str(v).strip().strip("'\"") for v in items}


def field_value(config: Mapping, path: str) -> object:
    """A dotted field of a resolved config; a section (norm, model, an experiment's arm or
    cell) stands for its ``name`` when it has one. Missing: None."""
    node: object = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node.get("name") if isinstance(node, Mapping) else node


def in_subgrid(value_of: Callable[[str], object], check: Mapping | None) -> bool:
    """Whether every field of the sub-grid ``check`` ({field: "v1,v2" or a list}) has one of its
    listed values; ``value_of(field)`` gives the value (None when missing). Listed values that a
    sweep does not have are simply never met (the sub-grid is intersected with the sweep)."""
    if not check:
        return False
    return all(str(value_of(path)) in listed(allowed) for path, allowed in check.items())


def runs_check(profile: object, check_profiles: object) -> bool:
    """Whether ``profile``'s sweeps run the check stage (``check_profiles`` None: every one)."""
    return check_profiles is None or str(profile) in listed(check_profiles)
