-- One wrk script for every scenario, driven by key=value arguments after `--`:
--   paths=FILE   each request goes to a random line of FILE (default: the URL's path)
--   method=M     the HTTP method (default GET)
--   body=FILE    the request body, sent with every request
--   type=MIME    its Content-Type (default application/json)
--   lines=FILE   one request per line, "AUTHORIZATION<TAB>BODY", each sent once: thread k of n takes
--                lines k, k+n, ... in order (a TOTP code is accepted once per user), starting over only
--                when its share runs out (those repeats are refused, and counted as non-2xx)
-- Other headers (Authorization) come from wrk's -H. done() prints one BENCH_JSON line for run.py.

local paths = {}
local requests = {}
local sequential = false
local next_request = 0

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_number", counter)
end

function init(args)
  local options = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^(%w+)=(.*)$")
    options[key] = value
  end
  local method = options.method or "GET"
  -- wrk.format() uses these headers instead of wrk.headers (which hold the -H ones), so start from a copy.
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  local body = nil
  if options.body then
    local file = assert(io.open(options.body, "rb"))
    body = file:read("*a")
    file:close()
    headers["Content-Type"] = options.type or "application/json"
  end
  if options.lines then
    headers["Content-Type"] = options.type or "application/json"
    local threads = tonumber(options.threads)
    local n = 0
    for line in io.lines(options.lines) do
      if n % threads == (thread_number or 1) - 1 then
        local authorization, line_body = line:match("^([^\t]*)\t(.*)$")
        local own = {}
        for name, value in pairs(headers) do
          own[name] = value
        end
        own["Authorization"] = authorization
        requests[#requests + 1] = wrk.format(method, wrk.path, own, line_body)
      end
      n = n + 1
    end
    sequential = true
    return
  end
  if options.paths then
    for line in io.lines(options.paths) do
      paths[#paths + 1] = line
    end
  else
    paths[1] = wrk.path
  end
  -- Pre-format every request once; request() then only picks one.
  for i, path in ipairs(paths) do
    requests[i] = wrk.format(method, path, headers, body)
  end
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

function request()
  if sequential then
    next_request = next_request % #requests + 1
    return requests[next_request]
  end
  return requests[math.random(#requests)]
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.connect, errors.read, errors.write, errors.timeout, errors.status
  ))
end
