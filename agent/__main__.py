"""Allow `python -m agent ...` as well as the `plumb-agent` console script."""

from agent.cli import main

main()
