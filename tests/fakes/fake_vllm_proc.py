"""A stand-in for ``python -m vllm.entrypoints.openai.api_server``.

Takes the same argv as vLLM (``--host``, ``--port``, ``--served-model-name``, ``--model``; every
other vLLM flag is accepted and ignored) plus ``--fake-*`` flags that choose a failure:

  --fake-mode ready        serve /health and /v1/models after --fake-startup-s (default)
  --fake-mode crash        print a traceback-like message and exit 1 at once
  --fake-mode never-ready  listen, but /health answers 503 forever
  --fake-exit-after-s S    exit 3 S seconds after becoming ready
  --fake-ignore-term       the server itself ignores SIGTERM
  --fake-stubborn-child    spawn a child that ignores SIGTERM (stays in the process group)
  --fake-setsid-child      spawn a child in its own session (leaves the process group)
Children print ``CHILD_PID <pid>`` to stdout (the server log) so tests can find them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHILD = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="fake")
    ap.add_argument("--served-model-name", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--fake-mode", choices=["ready", "crash", "never-ready"], default="ready")
    ap.add_argument("--fake-startup-s", type=float, default=0.3)
    ap.add_argument("--fake-exit-after-s", type=float, default=None)
    ap.add_argument("--fake-ignore-term", action="store_true")
    ap.add_argument("--fake-stubborn-child", action="store_true")
    ap.add_argument("--fake-setsid-child", action="store_true")
    args, _unknown = ap.parse_known_args()
    name = args.served_model_name or args.model
    print(f"fake vllm: model={args.model} name={name} port={args.port}", flush=True)

    if args.fake_ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for flag, new_session in ((args.fake_stubborn_child, False), (args.fake_setsid_child, True)):
        if flag:
            child = subprocess.Popen([sys.executable, "-c", CHILD], start_new_session=new_session)
            print(f"CHILD_PID {child.pid}", flush=True)

    if args.fake_mode == "crash":
        print("Traceback (most recent call last):", flush=True)
        print("RuntimeError: fake engine failed to start", flush=True)
        sys.exit(1)

    time.sleep(args.fake_startup_s)
    ready = args.fake_mode == "ready"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/health":
                self._send(200 if ready else 503, b"")
            elif self.path == "/v1/models" and ready:
                body = {"object": "list", "data": [{"id": name, "object": "model"}]}
                self._send(200, json.dumps(body).encode())
            else:
                self._send(404, b"{}")

        def _send(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *a: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"listening on {args.host}:{args.port}", flush=True)
    if args.fake_exit_after_s is not None:

        def die() -> None:
            time.sleep(args.fake_exit_after_s)
            print("fake vllm: exiting on purpose", flush=True)
            os._exit(3)

        threading.Thread(target=die, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
