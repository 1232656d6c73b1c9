"""Keeps one WebSocket connection open while schemathesis runs, so the connection routes
of the REST API meet a live connection and not only unknown ids.

Usage: hold_connection.py http://HOST:PORT SECONDS
Prints `connection_id <id>` once welcomed, then reads (and drops) whatever the server
sends until the server closes the connection or SECONDS have passed.
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(base: str, seconds: float) -> None:
    url = base.replace("http://", "ws://", 1) + "/ws"
    async with asyncio.timeout(seconds):
        async with connect(url, open_timeout=10) as ws:
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
            print("connection_id", welcome["connection_id"], flush=True)
            async for _ in ws:
                pass


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], float(sys.argv[2])))
    except (TimeoutError, KeyboardInterrupt):
        pass
