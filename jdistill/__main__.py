"""``python -m jdistill`` is the ``jdistill`` command."""

from jdistill.cli import main

main()
