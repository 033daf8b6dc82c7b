"""The sandbox's users: a small, steady stream of requests to the app's user route (bounded: RATE a second).

It logs every request the way a load balancer in front of the app would, in the common log format: the
app's answer, or 503 when the app does not answer at all. Its log is what the users saw."""

import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

TARGET = os.environ.get("TARGET", "http://app:8080/")
RATE = float(os.environ.get("RATE", "2"))  # requests a second, never more

print(f"traffic started: {TARGET} at {RATE:g} requests/s", flush=True)
while True:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(TARGET, timeout=2) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except Exception:
        status = 503  # what a proxy answers for an app that is down
    when = datetime.now(UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    print(f'traffic - - [{when}] "GET / HTTP/1.1" {status} -', flush=True)
    time.sleep(max(0.0, 1 / RATE - (time.monotonic() - started)))
