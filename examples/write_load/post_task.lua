-- wrk script: POST a ~300-byte Task (owner, status, requester, focus, code set) to /fhir/Task.
-- Owners, requesters and foci vary per request so that index entries are not all one value.
-- Used by run.sh; results in BENCHMARKS.md (2026-11-27, index cost on the write path).
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
local statuses = { "requested", "accepted", "in-progress", "completed", "ready" }
request = function()
  n = n + 1
  local body = string.format(
    '{"resourceType":"Task","status":"%s","intent":"order","priority":"routine",' ..
    '"code":{"coding":[{"system":"http://example.org/work","code":"draw-blood"}]},' ..
    '"focus":{"reference":"ServiceRequest/sr-%d"},"requester":{"reference":"Practitioner/pr-%d"},' ..
    '"owner":{"reference":"Organization/lab-%d"},"description":"Draw blood for panel %d"}',
    statuses[(n % 5) + 1], n, n % 97, n % 1000, n)
  return wrk.format(nil, nil, nil, body)
end
