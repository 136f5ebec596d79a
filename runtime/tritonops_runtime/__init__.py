"""tritonops runtime: the small programs that run inside tritonops pods.

This package never imports the operator (``tritonops``); the operator imports :mod:`contract`
from here so that both sides agree on paths, ports, file and environment names.
"""

__version__ = "0.1.0"
