"""`python -m provisioner` is the `provision` command."""

from provisioner.cli import main

main()
