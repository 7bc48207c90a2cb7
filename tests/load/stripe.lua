-- SPDX-License-Identifier: MIT
-- wrk script for the intake benchmark: POSTs signed Stripe deliveries, each event at most once.
--
--   wrk -t2 -c64 -d15s --latency -s stripe.lua http://127.0.0.1:PORT/webhooks/stripe -- events.txt 2
--
-- (the last argument repeats wrk's -t). events.txt and events.txt.tmpl come from gen_stripe_events.py.
-- Thread k of n keeps only the lines whose index is k modulo n, so each thread holds its own share and
-- no event is sent twice. (wrk calls request() once before the run to check for pipelining; the event
-- of that call is simply never sent.) A thread that runs out stops itself (wrk.thread:stop()); the few
-- requests it must still return before its loop ends are deliveries with a wrong signature (400, never
-- stored, counted as non-2xx and reported as fillers), so they cannot inflate the 2xx count. done()
-- prints one machine-readable BENCH line.
--
-- Set STRIPE_LUA_COUNT=1 to also count statuses in a response() callback (wrk then hands every
-- response to Lua); by default 2xx = requests - non-2xx, which is exact because wrk counts every
-- status above 399 as non-2xx and the server sends no 1xx/3xx on this route.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

local parts, names = {}, {}
local ts, sigs, toks, amounts = {}, {}, {}, {}
local nextidx = 1
-- globals, so that done() can read them through thread:get()
loaded, sent, fillers, exhausted, counted_ok, counted_bad = 0, 0, 0, 0, 0, 0
local headers = {}
local head
local path

local function read_template(file)
   local f = assert(io.open(file, "rb"), "cannot open " .. file)
   local tmpl = f:read("*a")
   f:close()
   local pos = 1
   while true do
      local i, j, name = tmpl:find("{{(%u+)}}", pos)
      if not i then
         table.insert(parts, tmpl:sub(pos))
         break
      end
      table.insert(parts, tmpl:sub(pos, i - 1))
      table.insert(names, name)
      pos = j + 1
   end
end

function init(args)
   -- wrk calls setup() for thread k just before thread k's init(), so no thread can learn the total
   -- from setup(): it is passed as the second script argument (wrk's -t).
   local file, nthreads = args[1], tonumber(args[2])
   assert(file and nthreads, "usage: wrk -tN ... -s stripe.lua URL -- events.txt N")
   read_template(file .. ".tmpl")
   local k, i = 0, 0
   for line in io.lines(file) do
      if i % nthreads == id then
         local t, sig, tok, amount = line:match("^(%d+) (%x+) (%w+) (%d+)$")
         assert(t, "bad line " .. (i + 1) .. " in " .. file)
         k = k + 1
         ts[k], sigs[k], toks[k], amounts[k] = t, sig, tok, amount
      end
      i = i + 1
   end
   loaded = k
   path = wrk.path
   headers["Content-Type"] = "application/json; charset=utf-8"
   headers["User-Agent"] = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
   headers["Host"] = wrk.headers["Host"] or wrk.host
   -- every request but its signature and body is the same: format it once (wrk.format walks the header
   -- table and builds the request piece by piece, which cost the load generator about a third of its CPU)
   head = "POST " .. path .. " HTTP/1.1\r\n"
   for name, value in pairs(headers) do
      head = head .. name .. ": " .. value .. "\r\n"
   end
end

local function format(sig, body)
   return table.concat({head, "Content-Length: ", #body, "\r\nStripe-Signature: ", sig, "\r\n\r\n", body})
end

local function body_for(vals)
   local out = {}
   for k = 1, #names do
      out[2 * k - 1] = parts[k]
      out[2 * k] = vals[names[k]]
   end
   out[2 * #names + 1] = parts[#parts]
   return table.concat(out)
end

local vals = {}

function request()
   local k = nextidx
   if k > loaded then
      -- out of events: stop this thread and send one harmless, unstorable delivery
      if exhausted == 0 then
         exhausted = 1
         wrk.thread:stop()
      end
      fillers = fillers + 1
      vals.TOKEN, vals.T, vals.AMOUNT = "filler", "0", "0"
      return format("t=0,v1=" .. string.rep("0", 64), body_for(vals))
   end
   nextidx = k + 1
   sent = k
   vals.TOKEN, vals.T, vals.AMOUNT = toks[k], ts[k], amounts[k]
   return format("t=" .. ts[k] .. ",v1=" .. sigs[k], body_for(vals))
end

if os.getenv("STRIPE_LUA_COUNT") == "1" then
   function response(status, hdrs, body)
      if status >= 200 and status < 300 then
         counted_ok = counted_ok + 1
      else
         counted_bad = counted_bad + 1
      end
   end
end

function done(summary, latency, requests)
   local tot_loaded, sent_total, fill_total, exh, cok, cbad = 0, 0, 0, 0, 0, 0
   for _, t in ipairs(threads) do
      tot_loaded = tot_loaded + (t:get("loaded") or 0)
      sent_total = sent_total + (t:get("sent") or 0)
      fill_total = fill_total + (t:get("fillers") or 0)
      exh = exh + (t:get("exhausted") or 0)
      cok = cok + (t:get("counted_ok") or 0)
      cbad = cbad + (t:get("counted_bad") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d non2xx=%d connect_err=%d read_err=%d write_err=%d " ..
      "timeouts=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d loaded=%d sent=%d fillers=%d " ..
      "threads_exhausted=%d lua_2xx=%d lua_non2xx=%d\n",
      summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, tot_loaded, sent_total, fill_total, exh, cok, cbad))
end
