#!/usr/bin/env python3
"""A KV store server gone wrong, for measuring what it costs (docs/RELIABILITY.md).

  misbehaving-store.py stall PORT   speaks the store protocol (PUT, lookup, GET) from memory, but answers every GET
                                    with its headers and a third of its body, then nothing more on that connection
  misbehaving-store.py silent PORT  accepts connections, reads what comes, never answers

Point kvfetch at it with --store http://127.0.0.1:PORT (any token).
"""
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

objects = {}


class StallingStore(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                chunk = self.rfile.read(size + 2)
                if size == 0:
                    return data
                data += chunk[:size]
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def answer(self, status, payload=b"", content_type=None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_PUT(self):
        objects[self.path.rsplit("/", 1)[-1]] = self.body()
        self.answer(204)

    def do_POST(self):
        keys = json.loads(self.body())["keys"]
        exists = [k in objects for k in keys]
        prefix = exists.index(False) if False in exists else len(exists)
        self.answer(200, json.dumps({"prefix": prefix, "exists": exists}).encode(), "application/json")

    def do_GET(self):
        data = objects.get(self.path.rsplit("/", 1)[-1])
        if data is None:
            self.answer(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 3])
        self.wfile.flush()
        time.sleep(3600)


def silent(port):
    listener = socket.create_server(("127.0.0.1", port))
    held = []
    while True:
        connection, _ = listener.accept()
        held.append(connection)

        def drain(c):
            while c.recv(65536):
                pass

        threading.Thread(target=drain, args=(connection,), daemon=True).start()


if __name__ == "__main__":
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode == "silent":
        silent(port)
    else:
        server = ThreadingHTTPServer(("127.0.0.1", port), StallingStore)
        server.daemon_threads = True
        server.serve_forever()
