"""The sandbox app: /health uses the database and Redis; the user route / uses the database too (so a
database outage fails users' requests: the guide's "500 errors on all requests") and fails by FAIL_RATIO
(a bad deploy); access log on stderr.

Like many real apps it keeps one database connection and never reconnects once it has broken:
after the database restarts, only restarting the app helps (the guide's "refresh connections")."""

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import psycopg2
import redis

DATABASE_URL = os.environ["APP_DATABASE_URL"]
REDIS_URL = os.environ["APP_REDIS_URL"]
FAIL_RATIO = float(os.environ.get("FAIL_RATIO", "0"))
VERSION = os.environ.get("APP_VERSION", "1")

_lock = threading.Lock()
_conn = None
_requests = 0


def db_check():
    global _conn
    with _lock:
        if _conn is None:
            _conn = psycopg2.connect(DATABASE_URL, connect_timeout=2)
            _conn.autocommit = True
        with _conn.cursor() as cur:
            cur.execute("SELECT 1")


class Handler(BaseHTTPRequestHandler):
    server_version = "sandbox-app/" + VERSION

    def _send(self, code, body):
        data = (body + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        global _requests
        url = urlsplit(self.path)
        if url.path == "/health":
            try:
                db_check()
            except Exception as exc:
                print(f"ERROR Database connection error: {str(exc).strip().splitlines()[0]}", flush=True)
                return self._send(500, "database unavailable")
            try:
                redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
            except Exception as exc:
                print(f"ERROR Redis connection error: {exc}", flush=True)
                return self._send(500, "redis unavailable")
            return self._send(200, "ok version=" + VERSION)
        if url.path == "/":
            try:
                db_check()
            except Exception as exc:
                print(f"ERROR Database connection error: {str(exc).strip().splitlines()[0]}", flush=True)
                return self._send(500, "database unavailable")
            with _lock:
                _requests += 1
                failing = (_requests % 100) < FAIL_RATIO * 100
            if failing:
                print("ERROR unhandled exception in request handler", flush=True)
                return self._send(500, "internal error")
            return self._send(200, "hello version=" + VERSION)
        return self._send(404, "not found")


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
