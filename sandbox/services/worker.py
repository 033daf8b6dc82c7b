"""The sandbox worker: takes email jobs from a BullMQ-style Redis list, honours the queue's pause flag."""

import os
import time

import redis

REDIS_URL = os.environ["APP_REDIS_URL"]
QUEUE = os.environ.get("QUEUE", "email")
JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "0.01"))

client = redis.Redis.from_url(REDIS_URL, socket_timeout=10, decode_responses=True)
print(f"worker started: queue={QUEUE} job_seconds={JOB_SECONDS}", flush=True)
while True:
    try:
        if client.hget(f"bull:{QUEUE}:meta", "paused") == "1":
            time.sleep(0.5)
            continue
        item = client.brpop(f"bull:{QUEUE}:wait", timeout=1)
        if item is None:
            continue
        if client.hget(f"bull:{QUEUE}:meta", "paused") == "1":
            client.rpush(item[0], item[1])  # paused while we waited: put it back where it was
            continue
        time.sleep(JOB_SECONDS)
        if "fail" in item[1]:
            client.zadd(f"bull:{QUEUE}:failed", {item[1]: time.time()})
    except redis.RedisError as exc:
        print(f"ERROR Redis connection error: {exc}", flush=True)
        time.sleep(1)
