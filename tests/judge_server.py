"""A small OpenAI-compatible judge server for tests: /v1/models and /v1/chat/completions over
real HTTP (stdlib http.server in a thread), with deterministic verdicts.

It reads the two outputs from the harness's judge prompt (the "=== Response m ===" / "=== Answer
A ===" blocks) and asks `prefer(first, second)` which is better: "first", "second" or "tie". An
alpaca_eval request (one answer token) is answered "m" or "M", with top log-probs when
`logprobs` is on; an arena_hard request with a short judgment ending in a verdict label. It
counts the requests it answered and the most it held at once, can fail the first `fail_first` of
them with a 503 or answer each after `delay` seconds, and reports usage as word counts.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = re.compile(r"=== (?:Response|Answer) (\w) ===\n(.*?)\n=== End of", re.S)


def prefer_longer(first: str, second: str) -> str:
    """The default judge: the longer output wins; equal lengths tie."""
    if len(first) == len(second):
        return "tie"
    return "first" if len(first) > len(second) else "second"


class JudgeServer:
    def __init__(self, models=("judge-7b",), *, prefer: Callable[[str, str], str] = prefer_longer,
                 logprobs: bool = True, fail_first: int = 0, confidence: float = 0.9, delay: float = 0.0):
        self.models, self.prefer, self.logprobs, self.confidence = list(models), prefer, logprobs, confidence
        self.fail_first, self.delay = fail_first, delay
        self.requests = 0  # chat completions answered (failures included)
        self.in_flight = self.most_in_flight = 0
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()

    def answer(self, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests += 1
            self.bodies.append(body)
            failing = self.requests <= self.fail_first
        if failing:
            return 503, {"error": {"message": "warming up", "type": "server_error"}}
        if body.get("model") not in self.models:
            return 404, {"error": {"message": f"model {body.get('model')} not found", "type": "not_found"}}
        text = body["messages"][-1]["content"]
        (first_name, first), (_, second) = BLOCK.findall(text)
        side = self.prefer(first, second)
        logprobs = None
        if first_name == "m":  # alpaca_eval: one token
            content = {"first": "m", "second": "M", "tie": "m"}[side]
            if body.get("logprobs") and self.logprobs:
                p = {"first": self.confidence, "second": 1 - self.confidence, "tie": 0.5}[side]
                top = [{"token": "m", "logprob": math.log(p), "bytes": None},
                       {"token": "M", "logprob": math.log(1 - p), "bytes": None}]
                logprobs = {"content": [{"token": content, "logprob": top[0 if content == "m" else 1]["logprob"],
                                         "bytes": None, "top_logprobs": top}]}
        else:  # arena_hard: a judgment ending in a label
            label = {"first": "A>B", "second": "B>A", "tie": "A=B"}[side]
            content = f"My own answer would be brief.\n\nMy final verdict is: [[{label}]]"
        prompt_words = sum(len(m["content"].split()) for m in body["messages"])
        completion_words = len(content.split())
        return 200, {
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": logprobs,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_words, "completion_tokens": completion_words,
                      "total_tokens": prompt_words + completion_words},
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": m, "object": "model", "created": 0, "owned_by": "tests"} for m in server.models]})
                else:
                    self._send(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "no such route"}})
                    return
                with server._lock:
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    status, payload = server.answer(body)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                try:
                    self._send(status, payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        return Handler
