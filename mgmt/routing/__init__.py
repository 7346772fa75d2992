"""Model catalog, deployments and per-department routes (the gateway's routing table)."""

__all__: list[str] = []
