-- wrk script for bench/run. Each request acts as a random one of the seeded
-- users (a line "token user" of $BENCH_TOKENS); $SCENARIO picks the route:
-- list (20 newest), get (one of the user's seeded tasks), create, or mix
-- (45% list, 45% get, 10% create).

local scenario = os.getenv("SCENARIO") or "list"
local users = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do
  local token, user = line:match("^(%S+) (%S+)$")
  users[#users + 1] = { auth = "Bearer " .. token, user = tonumber(user) }
end

local create_body = '{"title":"bench task","priority":"high","tags":["load"]}'

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local u = users[math.random(#users)]
  local kind = scenario
  if kind == "mix" then
    local r = math.random(100)
    kind = (r <= 45 and "list") or (r <= 90 and "get") or "create"
  end
  local headers = { ["Authorization"] = u.auth }
  if kind == "list" then
    return wrk.format("GET", "/api/me/tasks?limit=20", headers)
  elseif kind == "get" then
    -- Seeded ids are 00000000-0000-4000-8000-<user * 1000 + n>, n in 1..100.
    local id = string.format("00000000-0000-4000-8000-%012d", u.user * 1000 + math.random(100))
    return wrk.format("GET", "/api/me/tasks/" .. id, headers)
  end
  headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/api/me/tasks", headers, create_body)
end

function done(summary, latency, requests)
  local e = summary.errors
  if e.connect + e.read + e.write + e.status + e.timeout > 0 then
    io.stderr:write(string.format("wrk errors: connect %d, read %d, write %d, status %d, timeout %d\n",
      e.connect, e.read, e.write, e.status, e.timeout))
  end
  io.write(string.format("RESULT %.1f %.3f %.3f %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.status + e.timeout))
end
