"""A dashboard as a Python client sees it, for wardlink-bench.

Connects to a WebSocket server with the `websockets` library (Debian's python3-websockets),
prints "ready", then writes every text message it receives to stdout on one line, flushed at
once. The benchmark reads these lines and stamps each on arrival. The point is the TCP stack:
this client acknowledges segments the way ordinary clients do (delayed ACKs), so a server that
leaves Nagle's algorithm on shows its stalls here, where the benchmark's own Rust client may
hide them.

Usage: ws_receiver.py URL [BEARER_TOKEN]
"""

import asyncio
import sys

import websockets


async def main(url: str, token: str | None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with websockets.connect(
        url, extra_headers=headers, max_size=None, compression=None, ping_interval=None
    ) as ws:
        out = sys.stdout
        out.write("ready\n")
        out.flush()
        async for message in ws:
            if isinstance(message, str):
                out.write(message.replace("\n", " ") + "\n")
                out.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
