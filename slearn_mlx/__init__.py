"""slearn-mlx: adapt a small language model to a domain by training on what it does not know yet."""

from .blas import preload

preload()

__version__ = "0.1.0"
