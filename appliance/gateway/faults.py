"""Fault injection for the gateway's tests: failures of the gateway's own that no input can cause any more.

`ENCLAVE_GATEWAY_TEST_FAULT=<point>` makes the gateway fail at that point as a bug in its own code would, so
that a test can watch the safety net that catches it (decision 0352; the pattern of decision 0403). The
variable is read once, by GatewayConfig, and acted on only in app.py, at the edge: the proxy's core never
reads it, and unset (production) nothing here is on the path of a request. A value that names no point
stops the gateway at start. Points:

- `stream_pump`: a stream's second event fails in the pump, after the stream's first byte was sent.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["FAULT_ENV", "FAULT_POINTS", "InjectedFault", "failing_after"]

FAULT_ENV = "ENCLAVE_GATEWAY_TEST_FAULT"
FAULT_POINTS = ("stream_pump",)


class InjectedFault(RuntimeError):
    """A failure made on purpose by ENCLAVE_GATEWAY_TEST_FAULT; never raised in production."""


def failing_after(calls: int, work: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """`work`, which raises InjectedFault once it has been called `calls` times."""
    done = 0

    def faulty(data: bytes) -> bytes:
        nonlocal done
        done += 1
        if done > calls:
            raise InjectedFault(f"{FAULT_ENV}: injected failure after {calls} call(s)")
        return work(data)

    return faulty
