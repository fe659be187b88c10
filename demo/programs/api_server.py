#!/usr/bin/env python3
"""The shop's API, as the demo packs it into each release: / says who answers, /healthz says ok."""

import argparse
import http.server

VERSION = "0.0.0"  # the demo writes the release's version here


def settings(path: str) -> dict[str, str]:
    """`key: value` lines of the config file the plan wrote."""
    found = {}
    with open(path) as handle:
        for line in handle:
            key, sep, value = line.partition(":")
            if sep and not key.lstrip().startswith("#"):
                found[key.strip()] = value.strip().strip('"')
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config = settings(parser.parse_args().config)
    host, _, port = config["listen"].rpartition(":")
    answer = f"api {VERSION} on {host}:{port} with {config.get('workers', '1')} workers\n".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok\n" if self.path == "/healthz" else answer
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    print(f"api {VERSION} listening on {host}:{port}", flush=True)
    server.serve_forever()


main()
