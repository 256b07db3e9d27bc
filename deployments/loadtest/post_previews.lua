-- wrk script: POST /v1/previews with a new session code each request, so
-- every request creates a job (the full write path: validation, the job
-- record, listing indexes, the outbox and the asynq enqueue).
--   PREVIEWD_TOKEN=... wrk -t2 -c32 -d20s --latency -s deployments/loadtest/post_previews.lua http://127.0.0.1:8080
local counter = 0
local token = os.getenv("PREVIEWD_TOKEN") or ""

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  requests = 0
end

function request()
  requests = requests + 1
  local body = string.format('{"session_code":"SESSION_LOAD_%d_%d","selected_spin_index":%d,"scaled_bbox":[1,1.5,0.8]}', id, requests, requests % 4)
  return wrk.format("POST", "/v1/previews", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p99 %.2f ms, non-2xx %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
