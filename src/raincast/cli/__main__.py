"""`python -m raincast.cli`: the same as the `raincast` command."""

from raincast.cli import app

app()
