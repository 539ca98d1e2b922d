"""Where the datasets live."""

import os
from pathlib import Path

DATA_DIR_ENV = "NORMEXP_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def resolve_data_dir(configured: str | None) -> Path:
    """Data folder: a non-empty `configured` wins, then $NORMEXP_DATA_DIR, then ./data."""
    for candidate in (configured, os.environ.get(DATA_DIR_ENV)):
        if candidate is not None and str(candidate).strip():
            return Path(str(candidate).strip()).expanduser().absolute()
    return Path(DEFAULT_DATA_DIR).absolute()
