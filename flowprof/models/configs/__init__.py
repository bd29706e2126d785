"""The built-in models' declarations, one module per model file of ``flowprof/models/``: each
model's config dataclass (its options) and its :func:`flowprof.models.catalog.register` call
(name, summary, factory). Every module here is imported to list the models, so none imports
torch (a test checks)."""
