"""Two replicas of ``embedrec serve`` on one PostgreSQL: how long a write takes to reach the other.

    python benchmarks/replicas.py                   # 200 PUTs, small car data
    python benchmarks/replicas.py --smoke           # tiny data, 20 PUTs (seconds)
    python benchmarks/replicas.py --store postgresql://USER@HOST:PORT/DB   # a server of yours

Without ``--store`` a throwaway PostgreSQL cluster is started on a free loopback port
(``tests/postgres.py``: Debian's ``postgresql`` package; as root it runs as the ``postgres``
user), with its default settings (fsync on). Two replicas (two processes, one worker each, as
on two hosts) serve the same hybrid model on that database. The PUTs alternate between them;
after each acknowledged PUT the client asks the other replica for the listing back to back
(keep-alive, one request about every millisecond) until it answers 200. The delay is from the
acknowledgement to that answer: the NOTIFY, the other replica's catch-up by sequence number
(one query) and the embedding of the listing there, plus up to one polling round trip.
Results go between the ``replicas`` markers of ``--out`` (docs/serving.md).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from report_page import write_generated
from serving import AUTH, ROOT, Server, machine, prepare, versions

START, END = "<!-- replicas:start -->", "<!-- replicas:end -->"
CAR = {"make": "Nissan", "model": "Qashqai", "year": 2018, "price": 23221, "lat": 51.05,
       "lon": 13.74}  # fmt: skip


def wait_ready(server: Server, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while httpx.get(f"{server.url}/healthz/ready", timeout=10).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("replica not ready")
        time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def propagation(replicas: list[Server], puts: int, warmup: int) -> dict[str, Any]:
    """PUT on one replica, then read the listing back from the other until it is there."""
    import httpx

    clients = [httpx.Client(base_url=r.url, timeout=30) for r in replicas]
    delays, acks, polls = [], [], []
    try:
        for i in range(warmup + puts):
            writer, reader = clients[i % 2], clients[1 - i % 2]
            listing = f"propagation-{i}"
            car = {**CAR, "price": 10_000 + i}
            started = time.perf_counter()
            answer = writer.put(f"/v1/listings/{listing}", json=car, headers=AUTH)
            acknowledged = time.perf_counter()
            if answer.status_code != 201:
                raise RuntimeError(f"PUT answered {answer.status_code}: {answer.text}")
            tries = 0
            while (status := reader.get(f"/v1/listings/{listing}").status_code) != 200:
                if status != 404:
                    raise RuntimeError(f"GET {listing} on the other replica answered {status}")
                tries += 1
                if time.perf_counter() - acknowledged > 30:
                    raise RuntimeError(f"{listing} not seen by the other replica in 30 s")
            seen = time.perf_counter()
            if i >= warmup:
                delays.append((seen - acknowledged) * 1000)
                acks.append((acknowledged - started) * 1000)
                polls.append(tries + 1)
    finally:
        for client in clients:
            client.close()
    return {
        "puts": puts,
        "delay_ms": delays,
        "put_ms": acks,
        "polls": polls,
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": max(delays),
        "mean_ms": statistics.fmean(delays),
        "put_p50_ms": percentile(acks, 50),
        "put_p99_ms": percentile(acks, 99),
        "first_read_found": sum(p == 1 for p in polls),
    }


def report(results: dict[str, Any]) -> str:
    p = results["propagation"]
    lines = [
        "### Propagation of a write from one replica to the other",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + "  ",
        f"Setup: {results['setup']}",
        "",
        "| PUTs | delay p50 ms | delay p99 ms | delay max ms | PUT p50 ms | PUT p99 ms |",
        "|---|---|---|---|---|---|",
        f"| {p['puts']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['max_ms']:.1f} "
        f"| {p['put_p50_ms']:.1f} | {p['put_p99_ms']:.1f} |",
        "",
        "Delay: from the writing replica's acknowledgement until the other replica serves the "
        "listing (`GET /v1/listings/{id}` answers 200), measured by the client. PUT: the write "
        "itself, as its client sees it (validation, embedding, commit). The first read of the "
        f"other replica already found the listing in {p['first_read_found']} of {p['puts']} "
        "writes.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--size", default="small", help="car data size (tiny, small)")
    parser.add_argument("--store", help="postgresql:// URL (default: a throwaway cluster)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 20 PUTs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serving.md")
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedrec-replicas-bench"))
    parser.add_argument("--model", type=Path, help="a hybrid model directory to reuse")
    args = parser.parse_args()
    if args.smoke:
        args.puts, args.warmup, args.size = min(args.puts, 20), 2, "tiny"
    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or prepare(args.work, args.size, 2 if args.size == "tiny" else 5)[1]
    cluster = None
    if args.store:
        store = args.store
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from postgres import Cluster, unavailable

        if unavailable():
            raise SystemExit(f"cannot start PostgreSQL: {unavailable()}")
        cluster = Cluster()
        store = cluster.new_database("replicas_bench")
    replicas: list[Server] = []
    try:
        for _ in range(2):
            replicas.append(Server(model, store, 1, None))
        for replica in replicas:
            wait_ready(replica)
        print(f"two replicas up; {args.puts} PUTs", flush=True)
        results = {"propagation": propagation(replicas, args.puts, args.warmup)}
    finally:
        for replica in replicas:
            replica.stop()
        if cluster is not None:
            cluster.close()
    data = "tiny" if args.smoke else args.size
    results |= {
        "command": " ".join(["python benchmarks/replicas.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": {
            **versions(),
            "psycopg": importlib.metadata.version("psycopg"),
            "postgresql": _server_version(cluster),
        },
        "setup": f"two replicas (one worker each) of a hybrid model on the `{data}` car data, "
        "one PostgreSQL on loopback "
        + ("(a throwaway cluster, default settings, fsync on)" if cluster else "(--store)")
        + f"; PUTs alternate between the replicas after {args.warmup} warm-up PUTs",
    }
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    p = results["propagation"]
    print(f"delay p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms, max {p['max_ms']:.1f} ms")
    write_generated(args.out, report(results), START, END)


def _server_version(cluster: Any) -> str:
    import subprocess

    if cluster is None:
        return "?"
    done = subprocess.run([str(cluster.bin / "postgres"), "--version"], capture_output=True)
    words = done.stdout.decode().split()  # postgres (PostgreSQL) 15.18 (Debian ...)
    return words[2] if done.returncode == 0 and len(words) > 2 else "?"


if __name__ == "__main__":
    main()
