"""`python -m keyplane` runs the CLI."""

from keyplane.cli import main

main()
