"""Training: one loop for every task (normexp.train.fit), which each task (see normexp.tasks)
plugs into with its hooks."""


class Diverged(Exception):
    """The training loss became NaN or infinite: the run ends with status ``diverged``."""
