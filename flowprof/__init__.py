"""flowprof: exact operation counts and block-to-block dataflow of PyTorch models."""

__version__ = "0.1.0"
