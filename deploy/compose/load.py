"""A steady load for the compose fleet: CONCURRENCY workers sending chat completions to
ROUTER_URL, half of them streamed, with a shared system prompt (so that prefix caches hit) and
a short pause between requests. Standard library only: it runs in the router's image."""

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request

URL = os.environ.get("ROUTER_URL", "http://router:8888") + "/v1/chat/completions"
SYSTEM = "You are a helpful assistant. Answer briefly and precisely. " * 8


def worker(n: int) -> None:
    rng = random.Random(n)
    while True:
        body = {"model": "sim-model", "stream": rng.random() < 0.5, "max_tokens": rng.randint(8, 64),
                "messages": [{"role": "system", "content": SYSTEM},
                             {"role": "user", "content": f"question {rng.randint(1, 50)}"}]}
        request = urllib.request.Request(URL, data=json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                r.read()
        except (urllib.error.URLError, OSError):
            time.sleep(1)  # the router is not up yet, or restarting
        time.sleep(rng.uniform(0.05, 0.5))


for i in range(int(os.environ.get("CONCURRENCY", "12"))):
    threading.Thread(target=worker, args=(i,), daemon=True).start()
while True:
    time.sleep(3600)
