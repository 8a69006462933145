"""An example callback module for `vllm-router run --callbacks callbacks_example.handler`.

Put this file on PYTHONPATH (or install it). It rejects requests without the right API key,
answers 418 to anyone asking for coffee, and appends one line per finished request to a file.
"""

from __future__ import annotations

import json
import os
import threading
import time

from vllm_router import CustomCallbackHandler, Response

API_KEYS = {key for key in os.environ.get("ROUTER_API_KEYS", "").split(",") if key}
USAGE_FILE = os.environ.get("ROUTER_USAGE_FILE", "usage.jsonl")


class ExampleHandler(CustomCallbackHandler):
    def __init__(self) -> None:
        self._lock = threading.Lock()  # post_request runs on several worker threads

    def pre_request(self, request, request_body, request_json):
        if API_KEYS:
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if token not in API_KEYS:
                return Response({"error": {"message": "invalid API key", "type": "authentication_error",
                                           "code": 401}}, status_code=401)
        if b"coffee" in request_body:
            return Response({"error": {"message": "I'm a teapot", "type": "teapot", "code": 418}},
                            status_code=418, headers={"X-Brew": "tea"})
        return None  # go on to a backend

    def post_request(self, request, response_content):
        line = json.dumps({"time": time.time(), "request_id": request.request_id, "path": request.path,
                           "bytes": len(response_content)})
        with self._lock, open(USAGE_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")


handler = ExampleHandler()
