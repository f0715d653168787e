"""Events to a webhook: `edgepipe-runner --stream ... --watch C --notify URL` POSTs each event as
JSON. The camera loop never waits on the network: events go to a queue that one background thread
sends, retrying a failed POST with exponential back-off (a refused connection, a timeout, an HTTP
error status) and logging each failure as one line on stderr. An event unsent after its retries
is counted as lost; at the end of the stream the thread is given a bounded time to finish.
Only the URL the user names is contacted.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

from edgepipe.devices import EdgepipeError


def check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EdgepipeError(f"--notify {url}: give a webhook as http://HOST[:PORT]/PATH or https://...")
    return url


class Notifier:
    """POST events to `url` from a background thread; `retries` further tries per event, waiting
    `backoff` × 2^k seconds before try k+1, each POST bounded by `timeout` seconds."""

    def __init__(self, url: str, retries: int = 4, backoff: float = 0.5, timeout: float = 2.0, log=sys.stderr):
        self.url, self.retries, self.backoff, self.timeout, self.log = check_url(url), retries, backoff, timeout, log
        self.queued = self.sent = self.failed_posts = 0
        self.q: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="edgepipe-notify", daemon=True)
        self.thread.start()

    def send(self, event: dict) -> None:
        self.queued += 1
        self.q.put(event)

    def _post(self, event: dict) -> None:
        req = urllib.request.Request(
            self.url,
            data=json.dumps(event).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "edgepipe-runner"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read()

    def _loop(self) -> None:
        while True:
            event = self.q.get()
            if event is None:
                return
            for attempt in range(self.retries + 1):
                try:
                    self._post(event)
                    self.sent += 1
                    break
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    self.failed_posts += 1
                    why = (
                        f"HTTP {exc.code}"
                        if isinstance(exc, urllib.error.HTTPError)
                        else str(getattr(exc, "reason", exc))
                    )
                    last = attempt == self.retries or self.stopping.is_set()
                    print(
                        f"edgepipe-runner: notify: POST {self.url} failed ({why}) "
                        f"for the {event.get('event')} event at frame {event.get('frame')}; "
                        + ("giving up on it" if last else f"retrying in {self.backoff * 2**attempt:g} s"),
                        file=self.log,
                        flush=True,
                    )
                    if last:
                        break
                    self.stopping.wait(self.backoff * 2**attempt)

    def close(self, wait: float = 10.0) -> dict:
        """Let the queue drain for up to `wait` seconds (back-off waits are cut short once that is up)."""
        self.q.put(None)
        self.thread.join(wait)
        if self.thread.is_alive():
            self.stopping.set()
            self.thread.join(self.timeout + 1)
        return {
            "url": self.url,
            "events": self.queued,
            "sent": self.sent,
            "failed_posts": self.failed_posts,
            "lost": self.queued - self.sent,
        }
