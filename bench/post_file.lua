-- wrk script: POST one image as multipart/form-data field "file"; print a JSON summary.
-- Usage: wrk -t T -c C -d D --timeout S -s post_file.lua http://127.0.0.1:PORT/predict -- IMAGE
-- The summary also lists every completion time (seconds on CLOCK_MONOTONIC), so the
-- caller can measure the steady-state rate after the first requests.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
   return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

local boundary = "----onemodel-bench-7d3f9a1c"
local request_bytes = nil
local threads = {}
-- Per thread (each wrk thread has its own Lua state); gathered in done().
non2xx = 0
started = 0
completions = {}

local function read_file(path)
   local handle = assert(io.open(path, "rb"))
   local data = handle:read("*a")
   handle:close()
   return data
end

local function multipart_body(data, filename)
   return "--" .. boundary .. "\r\n"
      .. 'Content-Disposition: form-data; name="file"; filename="' .. filename .. '"\r\n'
      .. "Content-Type: image/jpeg\r\n\r\n"
      .. data .. "\r\n"
      .. "--" .. boundary .. "--\r\n"
end

function init(args)
   local path = args[1]
   assert(path, "give the image path after --")
   local filename = path:match("([^/]+)$")
   local headers = { ["Content-Type"] = "multipart/form-data; boundary=" .. boundary }
   request_bytes = wrk.format("POST", wrk.path, headers, multipart_body(read_file(path), filename))
   started = now()
end

function setup(thread)
   table.insert(threads, thread)
end

function request()
   return request_bytes
end

function response(status, headers, body)
   completions[#completions + 1] = now()
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
end

local function completion_list()
   local first, stamps = math.huge, {}
   for _, thread in ipairs(threads) do
      first = math.min(first, thread:get("started"))
   end
   for _, thread in ipairs(threads) do
      for _, stamp in ipairs(thread:get("completions")) do
         stamps[#stamps + 1] = string.format("%.6f", stamp - first)
      end
   end
   return "[" .. table.concat(stamps, ",") .. "]"
end

function done(summary, latency, requests)
   local e = summary.errors
   local socket_errors = e.connect + e.read + e.write + e.timeout
   local bad_status = 0
   for _, thread in ipairs(threads) do
      bad_status = bad_status + thread:get("non2xx")
   end
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": %d, "non2xx": %d, '
      .. '"socket_errors": %d, "timeouts": %d, "latency_us": {"mean": %.1f, "min": %d, '
      .. '"max": %d, "p50": %d, "p95": %d, "p99": %d}, "completions_s": %s}\n',
      summary.requests, summary.duration, summary.bytes, socket_errors + bad_status, bad_status,
      socket_errors, e.timeout, latency.mean, latency.min, latency.max,
      latency:percentile(50), latency:percentile(95), latency:percentile(99), completion_list()))
end
