"""`python -m provisioner` is the `provision` command."""

from provisioner.launcher import main

main()
