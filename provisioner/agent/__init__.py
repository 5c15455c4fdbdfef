"""The host agent: a stdlib-only program (Python >= 3.8) sent to the host with every call.

It reads one JSON document on stdin and writes JSON lines on stdout. Modules here import each
other relatively, because on the host they run as the in-memory package `provision_agent`.

A new agent process starts for every call on every host, so its start-up is paid once per host and
call: on a no-op most of an agent's time was importing the standard library. Modules therefore import
what only some calls need (subprocess, tempfile, shutil, difflib, traceback, urllib) inside the
functions that use it, and `typing` only for the type checker (`TYPE_CHECKING = False` is a name mypy
treats as true): annotations are never evaluated at run time.
"""
