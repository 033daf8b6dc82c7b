"""`python -m agent`: the `runbook` command."""

from agent.entry import main

main()
