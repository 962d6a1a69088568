"""A SignalR client for herald's integration tests, built on pysignalr (PyPI).

It connects to a base URL exactly as an app would (POST {url}/negotiate, follow the
{url, accessToken} redirect, open the WebSocket), listens for the given targets and prints one
JSON line per event on stdout: {"event": "connected"}, {"event": "message", "target", "args"},
{"event": "error", "error"}.

usage: python listen.py URL [TARGET ...]
"""

import asyncio
import json
import sys

from pysignalr.client import SignalRClient


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main(url, targets):
    client = SignalRClient(url)

    async def on_open():
        emit({"event": "connected"})

    async def on_close():
        emit({"event": "closed"})

    async def on_error(message):
        emit({"event": "error", "error": str(message)})

    def handler(target):
        async def on_message(args):
            emit({"event": "message", "target": target, "args": args})

        return on_message

    client.on_open(on_open)
    client.on_close(on_close)
    client.on_error(on_error)
    for target in targets:
        client.on(target, handler(target))
    await client.run()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2:] or ["statusUpdate"]))
    except Exception as exc:  # reported, not raised: the test reads stdout
        emit({"event": "error", "error": repr(exc)})
        sys.exit(2)
