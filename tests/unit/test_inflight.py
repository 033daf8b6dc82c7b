"""A check's watchdog cuts the connections its own thread waits on, and no other check's."""

from __future__ import annotations

import threading

from agent.inflight import InFlight


class Conn:
    def __init__(self) -> None:
        self.cut = False


def test_only_the_late_threads_connections_are_cut() -> None:
    in_flight = InFlight(lambda conn: setattr(conn, "cut", True))
    mine, theirs, returned = Conn(), Conn(), Conn()
    in_flight.checked_out(mine)
    in_flight.checked_out(returned)
    in_flight.returned(returned)  # back in the pool: no longer this thread's
    other = threading.Thread(target=in_flight.checked_out, args=(theirs,))
    other.start()
    other.join()
    in_flight.cut(threading.get_ident())
    assert (mine.cut, theirs.cut, returned.cut) == (True, False, False)
    in_flight.cut(other.ident or 0)
    assert theirs.cut
