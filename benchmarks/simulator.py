"""Throughput and round trip of the provider simulator on a zero-latency OpenAI route.

Run: ``python -m benchmarks.simulator [--seconds 3] [--connections 8] [--in-process]``.

The simulator runs in its own process (as ``tierwise simulate`` does) so the clients do
not share its GIL. Prints:

* sustained requests/s with keep-alive connections, from a lightweight raw asyncio client
  (what the server can take) and from ``httpx.AsyncClient`` (what a Python app sees; it is
  bound by the client's own CPU cost per request, printed alongside);
* the server's CPU time per request (from ``/_sim/stats``; with ``--in-process`` the
  server shares the client's process and GIL, so only the client figure is printed);
* the median and p90 round trip of sequential ``httpx.Client`` POSTs.

Target: >= 2,000 requests/s and well under 1 ms of server time per request on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

BODY = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "Say hello in five words."}]}
).encode()
PATH = "/v1/chat/completions"


@contextmanager
def simulator_process() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        yield first.split("listening on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def simulator_thread() -> Iterator[str]:
    from tierwise.testing import Simulator

    with Simulator() as sim:
        yield sim.url


async def raw_worker(host: str, port: int, deadline: float, counts: list[int]) -> None:
    """One keep-alive connection sending requests back to back (no HTTP library)."""
    reader, writer = await asyncio.open_connection(host, port)
    request = (
        f"POST {PATH} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer sim-openai\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    loop = asyncio.get_running_loop()
    done = 0
    while loop.time() < deadline:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)
        done += 1
    counts.append(done)
    writer.close()


async def httpx_worker(
    client: httpx.AsyncClient, url: str, deadline: float, counts: list[int]
) -> None:
    loop = asyncio.get_running_loop()
    done = 0
    while loop.time() < deadline:
        response = await client.post(
            url, content=BODY, headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        done += 1
    counts.append(done)


async def sustained(url: str, seconds: float, connections: int, kind: str) -> float:
    host, port = url.removeprefix("http://").split(":")
    counts: list[int] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds
    if kind == "raw":
        await asyncio.gather(
            *(raw_worker(host, int(port), deadline, counts) for _ in range(connections))
        )
    else:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:
            await asyncio.gather(
                *(httpx_worker(client, url + PATH, deadline, counts) for _ in range(connections))
            )
    return sum(counts) / (loop.time() - start)


def stats(url: str) -> dict[str, float]:
    return httpx.get(url + "/_sim/stats").json()  # type: ignore[no-any-return]


def round_trips(url: str, calls: int) -> list[float]:
    times = []
    with httpx.Client(timeout=10) as client:
        post: Callable[..., httpx.Response] = client.post
        for _ in range(50):  # warm up: connection, caches
            post(url + PATH, content=BODY, headers={"content-type": "application/json"})
        for _ in range(calls):
            start = time.perf_counter()
            post(url + PATH, content=BODY, headers={"content-type": "application/json"})
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1000, help="sequential round trips")
    parser.add_argument("--in-process", action="store_true", help="server thread, shared GIL")
    args = parser.parse_args()

    runner = simulator_thread if args.in_process else simulator_process
    with runner() as url:
        where = "in-process thread" if args.in_process else "separate process"
        print(f"simulator: {url} ({where}); zero-latency POST {PATH}")
        for kind in ("raw", "httpx"):
            before, client_before = stats(url), time.process_time()
            rate = asyncio.run(sustained(url, args.seconds, args.connections, kind))
            after, client_cpu = stats(url), time.process_time() - client_before
            served = max(1, after["requests"] - before["requests"] - 1)
            server_us = (after["cpu_seconds"] - before["cpu_seconds"]) / served * 1e6
            cpu_note = (
                f"client CPU {client_cpu / served * 1e6:.0f} us/request"
                if args.in_process
                else f"server CPU {server_us:.0f} us/request, "
                f"client CPU {client_cpu / served * 1e6:.0f} us/request"
            )
            print(
                f"sustained ({kind:5} client, {args.connections} keep-alive connections, "
                f"{args.seconds:g} s): {rate:,.0f} requests/s ({cpu_note})"
            )
        rtts = sorted(round_trips(url, args.calls))
        median = statistics.median(rtts) * 1e3
        p90 = rtts[int(len(rtts) * 0.9)] * 1e3
        print(
            f"round trip (httpx.Client, sequential, n={args.calls}): median {median:.2f} ms, "
            f"p90 {p90:.2f} ms"
        )


if __name__ == "__main__":
    main()
