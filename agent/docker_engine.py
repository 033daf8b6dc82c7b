"""Docker engine connections a deadline can cut.

docker-py (through requests and urllib3) bounds each read of a socket, never a call as a whole: an engine
answering one byte at a time holds a call for as long as it likes. Here the client's connection pools
note which thread has which connection checked out, so a check's watchdog can shut down exactly the
sockets its own thread is waiting on — and no other check's."""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from collections.abc import Iterable
from typing import Any

from agent.inflight import InFlight

__all__ = ["MAX_LOG_BYTES", "read_logs", "track"]

# The newest log bytes a check reads from one container at most: with `tail`'s line count, what bounds a
# read whatever the lines' lengths.
MAX_LOG_BYTES = 16 * 1024 * 1024
_READ = 64 * 1024


def _shutdown(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _tracking(pool_class: type, in_flight: InFlight) -> type:
    class TrackingPool(pool_class):  # type: ignore[misc]
        def _get_conn(self, timeout: float | None = None) -> Any:
            conn = super()._get_conn(timeout)
            in_flight.checked_out(conn)
            return conn

        def _put_conn(self, conn: Any) -> None:
            if conn is not None:
                in_flight.returned(conn)
            super()._put_conn(conn)

    TrackingPool.__name__ = TrackingPool.__qualname__ = pool_class.__name__  # as messages name it
    return TrackingPool


def track(client: Any) -> InFlight:
    """Make `client`'s (a docker.DockerClient) pools note their connections; returns what they note."""
    import docker  # noqa: F401 - the package before its modules (see tests/unit/test_imports.py)
    import urllib3
    from docker.transport import UnixHTTPAdapter
    from docker.transport.unixconn import UnixHTTPConnectionPool

    in_flight = InFlight(_shutdown)
    unix_pool = _tracking(UnixHTTPConnectionPool, in_flight)

    class Unix(UnixHTTPAdapter):  # type: ignore[misc]
        # docker-py builds its pools here with a fixed class; the same, with the tracking one.
        def get_connection(self, url: str, proxies: Any = None) -> Any:
            with self.pools.lock:
                pool = self.pools.get(url)
                if pool is None:
                    pool = unix_pool(url, self.socket_path, self.timeout, maxsize=self.max_pool_size)
                    self.pools[url] = pool
            return pool

    api = client.api
    for prefix, adapter in list(api.adapters.items()):
        if isinstance(adapter, UnixHTTPAdapter):
            replacement = Unix(
                "http+unix://" + adapter.socket_path, adapter.timeout, max_pool_size=adapter.max_pool_size
            )
            api.mount(prefix, replacement)
            api._custom_adapter = replacement
        elif hasattr(adapter, "poolmanager"):  # tcp:// (plain or TLS): requests' urllib3 pool manager
            adapter.poolmanager.pool_classes_by_scheme = {
                "http": _tracking(urllib3.HTTPConnectionPool, in_flight),
                "https": _tracking(urllib3.HTTPSConnectionPool, in_flight),
            }
    return in_flight


def read_logs(container: Any, *, since: float, tail: int, max_bytes: int = MAX_LOG_BYTES) -> bytes:
    """`container.logs(stdout, stderr, since, tail)` as UTF-8 bytes, in one engine call: docker-py's own
    inspects the container again first (to learn whether it has a TTY), which `container.attrs` already
    says. Its private helpers are used for the rest; if they change, its public call is the fallback.
    Invalid UTF-8 becomes U+FFFD, as decoding with "replace" would.

    At most the newest `max_bytes`, from a line's start: `tail` counts lines, and a line may be any
    length (a hostile or broken container's 50 MB without a newline). The answer is streamed, and what
    falls out of the window is dropped as it comes, so a check never holds more than that."""
    api = container.client.api
    params = {"stdout": 1, "stderr": 1, "timestamps": 0, "follow": 0, "tail": tail, "since": since}
    try:
        tty = bool(container.attrs["Config"]["Tty"])
        url, get, check, frames = api._url, api._get, api._raise_for_status, api._multiplexed_response_stream_helper
    except (AttributeError, KeyError, TypeError):
        raw = _newest([container.logs(stdout=True, stderr=True, since=since, timestamps=False, tail=tail)], max_bytes)
    else:
        response = get(url("/containers/{0}/logs", container.id), params=params, stream=True)
        try:
            check(response)
            # A TTY's log is the raw stream; otherwise frames (stdout and stderr interleaved, in order).
            raw = _newest(response.iter_content(_READ) if tty else frames(response), max_bytes)
        finally:
            response.close()
    try:
        raw.decode()
    except UnicodeDecodeError:
        raw = raw.decode("utf-8", "replace").encode()
    return raw


def _newest(chunks: Iterable[bytes], limit: int) -> bytes:
    """The last `limit` bytes of the chunks, from the first whole line in them if any was cut."""
    kept: deque[bytes] = deque()
    size, cut = 0, False
    for chunk in chunks:
        kept.append(chunk)
        size += len(chunk)
        while len(kept) > 1 and size - len(kept[0]) >= limit:
            size -= len(kept.popleft())
            cut = True
    data = b"".join(kept)
    if len(data) > limit:
        data, cut = data[-limit:], True
    if cut:
        newline = data.find(b"\n")
        data = data[newline + 1 :] if newline != -1 else data
    return data
