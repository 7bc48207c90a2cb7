-- SPDX-License-Identifier: MIT
-- wrk script for the portal benchmark (tests/load/bench_portal.sh): GETs with a client's Bearer token.
--
--   wrk -t2 -c64 -d10s --latency -s portal.lua 'http://127.0.0.1:PORT/v1/invoices?limit=50' -- token.txt
--   wrk -t2 -c64 -d10s --latency -s portal.lua 'http://127.0.0.1:PORT/v1/invoices/' -- token.txt ids.txt
--
-- token.txt holds the access token (one line). With ids.txt (one invoice id a line), every request asks for the next
-- id appended to the URL's path, each wrk thread starting at its own offset, so the detail route is asked for all the
-- client's invoices in turn rather than for one cached row. Every request is formatted once, in init(). done() prints
-- one machine-readable BENCH line (wrk counts every status above 399 as non-2xx; these routes send no 1xx or 3xx
-- without If-None-Match).

local next_thread = 0

function setup(thread)
   thread:set("id", next_thread)
   next_thread = next_thread + 1
end

local reqs = {}
local n, k = 0, 0

local function read_line(file)
   local f = assert(io.open(file, "rb"), "cannot open " .. file)
   local line = f:read("*l")
   f:close()
   return assert(line, "empty file " .. file)
end

function init(args)
   assert(args[1], "usage: wrk ... -s portal.lua URL -- token.txt [ids.txt]")
   local head = "Host: " .. (wrk.headers["Host"] or wrk.host) .. "\r\n" ..
      "Authorization: Bearer " .. read_line(args[1]) .. "\r\n" ..
      "Accept: application/json\r\n\r\n"
   if args[2] then
      for line in io.lines(args[2]) do
         if line ~= "" then
            n = n + 1
            reqs[n] = "GET " .. wrk.path .. line .. " HTTP/1.1\r\n" .. head
         end
      end
      assert(n > 0, "no ids in " .. args[2])
   else
      n = 1
      reqs[1] = "GET " .. wrk.path .. " HTTP/1.1\r\n" .. head
   end
   k = (id * 7919) % n
end

function request()
   k = k % n + 1
   return reqs[k]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d non2xx=%d connect_err=%d read_err=%d write_err=%d " ..
      "timeouts=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max))
end
