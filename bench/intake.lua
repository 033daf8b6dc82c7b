-- wrk's script for the intake figure: each request one single-alert delivery to POST /v1/alerts, each
-- alert its own (labels client and n), over keep-alive connections. wrk is C: on a 2-core machine the
-- sender no longer takes the core the daemon needs, as Python client threads did.
-- Usage: wrk -t1 -c8 -d10s -s bench/intake.lua http://127.0.0.1:PORT -- TOKEN

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  n = 0
end

function request()
  n = n + 1
  local body = string.format('{"name":"BenchNoise","labels":{"client":"%d","n":"%d"}}', id, n)
  return wrk.format(nil, "/v1/alerts", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
