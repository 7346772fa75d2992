"""Enclave's runtime side: gateway, engines, bundles, hardware detection and the enclavectl CLI.

Importable without Django wherever it can be (the gateway's hot path and the offline verifiers are).
"""

__all__: list[str] = []
