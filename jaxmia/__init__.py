"""jaxmia: single-point membership inference, with/without models trained batch-parallel in JAX."""

__version__ = "0.3.0"
