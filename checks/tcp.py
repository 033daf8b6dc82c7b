"""TCP check: a port accepts connections (a dependency is listening)."""

from __future__ import annotations

import socket
import time

from pydantic import Field

from agent.plugin_api import CheckContext, Outcome, Params, PluginSet, Status, TargetUnreachable

plugins = PluginSet("tcp")


class ConnectParams(Params):
    host: str = Field(description="Host name or address.")
    port: int = Field(ge=1, le=65535)


@plugins.check("tcp.connect", ConnectParams)
def connect(ctx: CheckContext, params: ConnectParams) -> Outcome:
    """A TCP connection to host:port is accepted."""
    start = time.monotonic()
    try:
        with socket.create_connection((params.host, params.port), timeout=ctx.settings.connect_timeout):
            pass
    except TimeoutError:
        raise TargetUnreachable("tcp_timeout", f"{params.host}:{params.port}: timed out") from None
    except OSError as exc:
        raise TargetUnreachable("tcp_refused", f"{params.host}:{params.port}: {exc.strerror or exc}") from None
    ms = (time.monotonic() - start) * 1000
    return Outcome(Status.OK, f"{params.host}:{params.port} open ({ms:.0f} ms)", metrics={"connect_ms": round(ms, 1)})
