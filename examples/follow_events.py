#!/usr/bin/env python3
"""A signer that keeps jwksd's active key current (README, "Following the
stream"). Standard library only.

- It pulls GET /v1/keys/active and never uses the key past the answer's
  Cache-Control max-age (signing_key.cache_max_age): it pulls again before
  then (If-None-Match: a 304 costs nothing).
- It follows GET /v1/events and pulls at once on key.active or key.revoked
  of its algorithm: a rotation or an emergency revocation reaches it within
  a fraction of a second instead of after max-age.
- When the stream is down it says so and goes on polling by max-age; it
  reconnects with Last-Event-ID, so nothing is missed.

Environment: JWKSD_ADMIN_URL (default http://127.0.0.1:8081),
JWKSD_SIGNER_TOKEN, JWKSD_ALG (default ES256). It prints a line each time
the key it signs with changes; sign with `keys.get()` in your code.
"""

import json
import os
import re
import threading
import time
import urllib.error
import urllib.request

ADMIN = os.environ.get("JWKSD_ADMIN_URL", "http://127.0.0.1:8081")
TOKEN = os.environ["JWKSD_SIGNER_TOKEN"]
ALG = os.environ.get("JWKSD_ALG", "ES256")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class ActiveKey:
    def __init__(self):
        self.lock = threading.Lock()
        self.key = None  # the /v1/keys/active answer (holds the private key)
        self.etag = None
        self.expires = 0.0  # time.monotonic() after which it must not be used

    def pull(self):
        req = urllib.request.Request(f"{ADMIN}/v1/keys/active?alg={ALG}", headers=AUTH)
        if self.etag:
            req.add_header("If-None-Match", self.etag)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                body, headers = json.load(r), r.headers
        except urllib.error.HTTPError as e:
            if e.code != 304:
                raise
            body, headers = None, e.headers
        m = re.search(r"max-age=(\d+)", headers.get("Cache-Control", ""))
        with self.lock:
            if body is not None:
                if self.key is None or self.key["kid"] != body["kid"]:
                    print(f"signing with {body['kid']}", flush=True)
                self.key = body
                self.etag = headers.get("ETag")
            self.expires = time.monotonic() + (int(m.group(1)) if m else 0)

    def get(self):
        """The key to sign with, or None (stop issuing) once past max-age."""
        with self.lock:
            return self.key if time.monotonic() < self.expires else None


def follow(keys):
    last_id = None
    while True:
        headers = dict(AUTH)
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            req = urllib.request.Request(f"{ADMIN}/v1/events", headers=headers)
            # Keep-alives arrive every events.keepalive (15 s): a longer
            # read timeout notices a dead connection.
            with urllib.request.urlopen(req, timeout=60) as stream:
                print("following the event stream", flush=True)
                event, data = None, {}
                for raw in stream:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("id: "):
                        last_id = line[4:]
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                    elif line == "" and event:
                        if event in ("key.active", "key.revoked") and data.get("alg") == ALG:
                            keys.pull()
                        event, data = None, {}
            print("event stream ended; polling by max-age", flush=True)
        except Exception as e:  # down, refused, a proxy in the way
            print(f"event stream down ({e}); polling by max-age", flush=True)
        time.sleep(1)


def main():
    keys = ActiveKey()
    threading.Thread(target=follow, args=(keys,), daemon=True).start()
    while True:
        # Polling goes on beside the stream: it is what holds when the
        # stream is down. Pull a second before max-age runs out.
        if time.monotonic() >= keys.expires - 1:
            try:
                keys.pull()
            except Exception as e:
                print(f"cannot pull the active key ({e})", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
