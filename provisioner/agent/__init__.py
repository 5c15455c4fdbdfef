"""The host agent: a stdlib-only program (Python >= 3.8) sent to the host with every call.

It reads one JSON document on stdin and writes JSON lines on stdout. Modules here import each
other relatively, because on the host they run as the in-memory package `provision_agent`.
"""
