"""``python -m tierwise.cli`` runs the ``tierwise`` command."""

from tierwise.cli.app import main

main()
