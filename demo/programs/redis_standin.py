"""A stand-in for redis-server (not installed), for plumb demo only: PING gets +PONG."""

import socketserver
import sys

with open(sys.argv[1]) as config:
    settings = dict(line.split(None, 1) for line in config if line.strip())


class Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            known = line.strip().upper() == b"PING"
            self.wfile.write(b"+PONG\r\n" if known else b"-ERR this stand-in only knows PING\r\n")


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((settings["bind"].strip(), int(settings["port"])), Handler).serve_forever()
