"""Training loops, one per task (see normexp.tasks)."""


class Diverged(Exception):
    """The training loss became NaN or infinite: the run ends with status ``diverged``."""
