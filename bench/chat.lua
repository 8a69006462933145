-- wrk script: one small non-streaming chat completion per request.
--   wrk -t1 -c64 -d10s --latency -s bench/chat.lua http://127.0.0.1:8888/v1/chat/completions
-- At the end it also prints one line "WRK_JSON {...}" (latencies in microseconds) that the
-- benchmark scripts read instead of parsing wrk's human output.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"sim-model","messages":[{"role":"user","content":"hi"}],"max_tokens":1}'

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
      '"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(75), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
end
