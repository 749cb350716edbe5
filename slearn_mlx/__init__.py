"""slearn-mlx: adapt a small language model to a domain by training on what it does not know yet.

Importing the package, or any module of it that needs no model (grade, data), changes nothing: no
environment variable, no library loaded, no waiting. The fast BLAS of Linux CPUs is set up where the
command starts (`__main__`), and by `slearn_mlx.blas.setup()` in a script of your own, before mlx is
imported (README, "From Python").
"""

__version__ = "0.1.0"
