"""Test stand-in for ``inference/serve.py`` (used only by the runtime tests): same command line, same
``/ping`` and ``/invocations`` contract, the model loaded from ``--model-dir`` (model.joblib + schema.json).
"""

from __future__ import annotations

import argparse
import json
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import joblib
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    model = joblib.load(Path(args.model_dir) / "model.joblib")
    schema = json.loads((Path(args.model_dir) / "schema.json").read_text())
    n_features = len(schema["feature_names"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self):
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, *a):
            return

        def _send(self, status, body, ctype="application/json"):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200 if self.path == "/ping" else 404, b"{}")

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                rows = np.asarray(json.loads(raw)["instances"], dtype=float).reshape(-1, n_features)
            except Exception as exc:
                self._send(400, json.dumps({"error": f"bad payload: {exc}"}).encode())
                return
            scores = model.predict_proba(rows)[:, 1]
            out = {"predictions": [{"score": float(s), "label": int(s >= 0.5)} for s in scores]}
            self._send(200, json.dumps(out).encode())

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
