"""`python -m lvscluster.cli` runs the command line."""

from lvscluster.cli import main

main()
