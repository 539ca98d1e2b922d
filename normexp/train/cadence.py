"""When a classifier is validated (``train.val_every``), and which runs evaluate their test set
(issue #30: evaluate only what is read).

Everything that reads a classification run's validation reads its last epoch: the LR selection,
the convergence check, the budget ladder, ``did_not_train`` and the summary's ``val_acc``
(docs/results.md, "What a run records"). No figure reads a per-epoch validation curve (only the
W&B dashboards draw one, from whatever epochs a run logged), and the training loss and accuracy
are logged every epoch anyway, so a run stays watchable without them. Each profile's scale
therefore sets how often the epochs before the last are validated: every epoch at smoke and
quick (cheap, and a curve to watch), only the last at standard (``configs/config.yaml``).

The LR selection's runs (``protocol.stage`` select) are read on their selection metric only, a
validation metric or C9's last-epoch training accuracy (normexp/protocol/select.py refuses test
metrics): the LR figures draw that metric, and every table of results keeps the runs of record
(``columns.table``; the notebook's helpers likewise). So a selection run measures nothing else
(``selection_run``): no test set (no test metrics, no BN batch-statistics or precise-BN pass, no
sample grid) and no probes of train=instrumented (which never change training: the same
training metrics, so the same choice). Every other stage keeps them: the ladder's rungs are read
on test, and the convergence check's doubled runs, read on validation by the check, keep the
test metrics that show how an effect moves past the record's budget. The stage is part of a
run's config and key already: nothing new enters a key.
"""

from collections.abc import Mapping

SELECT = "select"  # protocol.stage of the LR selection's runs (normexp/protocol/select.py)
EVERY_EPOCH = 1  # the neutral value: runs stored before the field were validated every epoch
LAST_ONLY = 0


def validation_due(epoch: int, epochs: int, train: Mapping) -> bool:
    """Whether 1-based ``epoch`` of a run of ``epochs`` is validated: the last always, a multiple
    of ``train.val_every`` too (0: none before the last). A run with a wall budget
    (``train.max_minutes``) is validated every epoch: any epoch may turn out to be its last."""
    every = train.get("val_every", EVERY_EPOCH)  # absent in configs stored before it existed
    if epoch >= epochs or train.get("max_minutes") is not None:
        return True
    return every != LAST_ONLY and epoch % every == 0


def selection_run(config: Mapping) -> bool:
    """Whether a run (resolved config) is one of the LR selection's, which measures its
    selection metric only: no test set, no probes (a config without a protocol section, as a
    bench builds one, is not)."""
    return (config.get("protocol") or {}).get("stage") == SELECT
