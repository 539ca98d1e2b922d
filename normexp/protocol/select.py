"""The learning-rate selection rule, as a pure function of a table of selection runs.

Rule (written before any result is seen; README "Fair protocol"): in each cell, every multiplier
of the grid is scored by the mean, over the selection seeds, of the runs' final validation
metric (``protocol.select_on``: accuracy for a classifier, bits per character for the character
LSTM, PSNR for an image-to-image network, the held-out loss for the Gram-loss stylization; each
in its better direction; or, for a claim about training itself, the final training accuracy as
trained: C9's noisy BN); a diverged run scores worst; the best mean wins, ties going to the
smaller multiplier (the safer step). A winner at either end of the grid is ``at_edge``: the
optimum may lie outside, and the sweeper widens the grid there. A cell with a grid value that
has fewer than ``seeds`` finished runs is not ``complete`` and gets no choice.

Only the cell columns, the multiplier, the status and the selection metric are read: test
metrics can never influence the choice, and asking to select on one is refused.
"""

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas only where a grid is selected: a GPU bundle runs without it
    import pandas as pd  # schema imports this module: pandas only where tables are read

LR_MULT = "optim.lr_mult"
STATUS = "status"
STAGE = "protocol.stage"
# The metrics a selection may use, with the direction that is better: validation metrics, and
# the last epoch's training accuracy (as trained) for claims about training itself (C9).
SELECT_DIRECTION = {"val_acc": "higher", "valid_bpc": "lower", "valid_ppl": "lower",
                    "val_psnr": "higher", "val_stylization_loss": "lower",
                    "train_acc": "higher"}
SELECT_ON = tuple(SELECT_DIRECTION)
STAGES = ("select", "record", "ladder", "check")  # ladder: lower budgets; check: doubled (plan.py)
DIVERGED_SCORE = -math.inf


def select_lr(
    rows: "pd.DataFrame",
    cell_columns: Sequence[str],
    grid: Sequence[float],
    metric: str = "val_acc",
    seeds: int = 1,
) -> "pd.DataFrame":
    """One row per cell: the cell columns, ``grid``, ``score`` ({multiplier: mean of ``metric``;
    a diverged run counts as the worst value, -inf or +inf}), ``chosen`` (None when not
    complete), ``at_edge`` and ``complete``. ``rows``: one finished selection run each (cell
    columns, optim.lr_mult, status, ``metric``); runs at a multiplier outside ``grid`` are
    ignored."""
    if metric not in SELECT_ON:
        raise ValueError(
            f"selection must use a validation metric or the training accuracy (one of "
            f"{', '.join(SELECT_ON)}), not {metric!r}"
        )
    grid = sorted(float(g) for g in grid)
    if not grid:
        raise ValueError("an empty LR grid")
    cells = list(cell_columns)
    # The only columns read: test metrics are not even copied.
    used = rows[[*cells, LR_MULT, STATUS, metric]].copy()
    used = used[used[LR_MULT].astype(float).isin(grid)]
    sign = 1.0 if SELECT_DIRECTION[metric] == "higher" else -1.0  # the score: higher is better
    used["score"] = (sign * used[metric].astype(float)).where(
        used[STATUS] != "diverged", DIVERGED_SCORE
    )
    used = used[used[STATUS].isin(("ok", "diverged")) & used["score"].notna()]
    out = []
    for cell, group in used.groupby(cells, sort=False, dropna=False):
        cell = cell if isinstance(cell, tuple) else (cell,)
        by_lr = group.groupby(group[LR_MULT].astype(float))["score"]
        counts, means = by_lr.size(), by_lr.mean()
        complete = all(counts.get(g, 0) >= seeds for g in grid)
        chosen = None
        if complete:
            best = max(means[g] for g in grid)
            chosen = min(g for g in grid if means[g] == best)  # ties: the smaller multiplier
        out.append(
            {
                **dict(zip(cells, cell, strict=True)),
                "grid": grid,
                "score": {g: sign * float(means[g]) for g in grid if g in means},
                "chosen": chosen,
                "at_edge": chosen is not None and len(grid) > 1 and chosen in (grid[0], grid[-1]),
                "complete": complete,
            }
        )
    import pandas as pd  # schema imports this module: pandas only where tables are read

    return pd.DataFrame(out, columns=[*cells, "grid", "score", "chosen", "at_edge", "complete"])


def widened(grid: Sequence[float], chosen: float, factor: float = 2.0) -> list[float]:
    """The grid with one more step past the edge where ``chosen`` sits (x factor above the top,
    / factor below the bottom); unchanged when ``chosen`` is inside."""
    grid = sorted(float(g) for g in grid)
    if chosen == grid[-1]:
        return [*grid, grid[-1] * factor]
    if chosen == grid[0]:
        return [grid[0] / factor, *grid]
    return grid
