"""mlwatch's benchmarks: speed, memory and accuracy harnesses and their committed results.

Not part of the installed distribution. Run a harness as a script or a module from the repository
root, e.g. ``benchmarks/.peers/bin/python benchmarks/bench_profile.py`` (see benchmarks/README.md).
"""
