"""Shared test settings: hypothesis runs are derandomized, so CI sees the same examples."""

from hypothesis import settings

settings.register_profile("flowprof", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("flowprof")
