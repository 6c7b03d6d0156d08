"""The one compiled part: mlwatch._speedups, optional (no compiler: mlwatch installs and runs slower)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("mlwatch._speedups", ["mlwatch/_speedups.c", "mlwatch/_http_tap.c"], optional=True, extra_compile_args=["-O2"])])
