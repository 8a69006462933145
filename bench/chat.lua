-- wrk script: one small non-streaming chat completion per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"sim-model","messages":[{"role":"user","content":"hi"}],"max_tokens":1}'
