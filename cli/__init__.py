"""The `tiangong` command line: thin typer commands; heavy imports happen inside each command."""
