-- wrk script: POST the JSON body from $BENCH_BODY_FILE and print a JSON summary.
-- The summary line starts with "BENCHJSON " so run.py can find it in wrk's output.

local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local bearer = os.getenv("BENCH_BEARER")
if bearer and bearer ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. bearer
end

-- "__N__" in the body becomes this run's id and a per-request counter: every request distinct,
-- within the run and across runs against the same server (a cache-miss load).
if string.find(body, "__N__", 1, true) then
  local run = os.getenv("BENCH_RUN_ID") or tostring(os.time())
  local counter = 0
  request = function()
    counter = counter + 1
    local unique = string.gsub(body, "__N__", run .. "-" .. tostring(counter))
    return wrk.format(nil, nil, nil, unique)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"tool":"wrk","requests":%d,"duration_s":%.6f,"bytes":%d,' ..
    '"errors":%d,"non2xx":%d,"errors_detail":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"latency_ms":{"p50":%.4f,"p90":%.4f,"p99":%.4f,"max":%.4f,"mean":%.4f}}\n',
    summary.requests, summary.duration / 1e6, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
