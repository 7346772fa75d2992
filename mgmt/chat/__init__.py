"""Staff chat in the console: conversations with an alias, relayed to the gateway (issue 3)."""

__all__: list[str] = []
