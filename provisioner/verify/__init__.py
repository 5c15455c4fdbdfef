"""`provision verify`: pytest-testinfra tests generated from a manifest's expanded resources.

The test module is static code shipped in the package; every value from the manifest reaches it as JSON
data beside it, so nothing a manifest says can become code.
"""
