"""A small OpenAI-compatible model server for fabric/tests/gateway.rs (standard library only).

Serves POST /v1/chat/completions (streamed as Server-Sent Events with "stream": true, one
token per chunk, or as one chat.completion) and POST /v1/embeddings (1024 floats per input,
as lists or base64 like OpenAI). The chat answer is the tokens "tok0 ", "tok1 ", ...; the
number of tokens is the last message's content when it is an integer, else 8. Models:
"tiny-chat" and "tiny-embed"; any other is a 404 model_not_found. A body that still carries
the gateway's "nexus" member is a 400: the gateway must forward the request without it.

Prints "PORT <n>" on stdout once it listens on 127.0.0.1 (port 0 unless given as argv[1]),
then serves until killed.
"""

import base64
import json
import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODELS = {"tiny-chat", "tiny-embed"}
DIMENSIONS = 1024
PROMPT_TOKENS = 7


def embedding(text, dims=DIMENSIONS):
    seed = sum(text.encode()) % 97
    return [((i * 31 + seed) % 1000) / 1000.0 for i in range(dims)]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, fmt, *args):
        sys.stderr.write("mock upstream: " + (fmt % args) + "\n")

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, kind, code):
        self.send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError as e:
            self.error(400, "body is not JSON: %s" % e, "invalid_request_error", None)
            return None
        if not isinstance(body, dict):
            self.error(400, "body must be an object", "invalid_request_error", None)
            return None
        if "nexus" in body:
            self.error(400, "the gateway forwarded its nexus member", "invalid_request_error", None)
            return None
        if body.get("model") not in MODELS:
            self.error(404, "The model `%s` does not exist." % body.get("model"),
                       "invalid_request_error", "model_not_found")
            return None
        return body

    def do_POST(self):
        if self.path == "/v1/chat/completions":
            self.chat()
        elif self.path == "/v1/embeddings":
            self.embeddings()
        else:
            self.error(404, "no route %s" % self.path, "invalid_request_error", None)

    def chat(self):
        body = self.read_body()
        if body is None:
            return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self.error(400, "messages: required", "invalid_request_error", None)
            return
        content = str(messages[-1].get("content", ""))
        count = int(content) if content.isdigit() else 8
        tokens = ["tok%d " % i for i in range(count)]
        created = int(time.time())
        if not body.get("stream"):
            self.send_json(200, {
                "id": "chatcmpl-mock", "object": "chat.completion", "created": created,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(tokens)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count,
                          "total_tokens": PROMPT_TOKENS + count},
            })
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def event(obj):
            data = obj if isinstance(obj, str) else json.dumps(obj)
            self.wfile.write(("data: %s\n\n" % data).encode())
            self.wfile.flush()

        def chunk(delta, finish=None):
            return {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        event(chunk({"role": "assistant", "content": ""}))
        for t in tokens:
            event(chunk({"content": t}))
            time.sleep(0.002)
        event(chunk({}, "length" if body.get("max_tokens") == count else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            event({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created,
                   "model": body["model"], "choices": [],
                   "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count,
                             "total_tokens": PROMPT_TOKENS + count}})
        event("[DONE]")

    def embeddings(self):
        body = self.read_body()
        if body is None:
            return
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            self.error(400, "input: required", "invalid_request_error", None)
            return
        data = []
        for i, text in enumerate(inputs):
            vector = embedding(str(text))
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack("<%df" % len(vector), *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(str(t).split()) for t in inputs)
        self.send_json(200, {"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
