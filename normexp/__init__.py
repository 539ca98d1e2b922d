"""normexp: an experiment suite that tests the claims of a blog post on normalization layers."""

__version__ = "0.1.0"
