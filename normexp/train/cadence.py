"""When a classifier is validated (``train.val_every``, issue #30: evaluate only what is read).

Everything that reads a classification run's validation reads its last epoch: the LR selection,
the convergence check, the budget ladder, ``did_not_train`` and the summary's ``val_acc``
(docs/results.md, "What a run records"). No figure reads a per-epoch validation curve (only the
W&B dashboards draw one, from whatever epochs a run logged), and the training loss and accuracy
are logged every epoch anyway, so a run stays watchable without them. Each profile's scale
therefore sets how often the epochs before the last are validated: every epoch at smoke and
quick (cheap, and a curve to watch), only the last at standard (``configs/config.yaml``).
"""

from collections.abc import Mapping

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

