"""Performance measurements of vilab's engines (not tests): ``python -m benchmarks``.

NUTS ESS per second and SVI time to answer on non-centered eight schools, vilab
against plain Pyro and NumPyro in one process. See ``benchmarks/README.md``.
NumPyro and JAX are imported only by :mod:`benchmarks.numpyro_eight_schools`.
"""
