"""Two replicas of ``embedrec serve`` on one PostgreSQL: how long a write takes to reach the
other, and what faults under traffic cost (``replica_faults.py``).

    python benchmarks/replicas.py                   # every part, small car data
    python benchmarks/replicas.py --smoke           # tiny data, few writes (a minute or two)
    python benchmarks/replicas.py --parts propagation,rollout
    python benchmarks/replicas.py --store postgresql://USER@HOST:PORT/DB   # a server of yours

Without ``--store`` a throwaway PostgreSQL cluster is started on a free loopback port
(``tests/postgres.py``: Debian's ``postgresql`` package; as root it runs as the ``postgres``
user), with its default settings (fsync on). Two replicas (two processes, one worker each, as
on two hosts) serve the same hybrid model on that database. The PUTs alternate between them;
after each acknowledged PUT the client asks the other replica for the listing back to back
(keep-alive, one request about every millisecond) until it answers 200. The delay is from the
acknowledgement to that answer: the NOTIFY, the other replica's catch-up by sequence number
(one query) and the embedding of the listing there, plus up to one polling round trip.
The other parts: ``mixed`` (``--writes`` PUTs and DELETEs over both replicas, one replica
SIGKILLed and started again halfway), ``restart`` (PostgreSQL stopped and started during reads
and writes; only with the throwaway cluster) and ``rollout`` (a reload to a second model on one
replica, a rollback on the other). Results go between the ``replicas`` markers of ``--out``
(docs/serving.md).
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

from replica_faults import database_restart, mixed_writes, rollout
from report_page import write_generated
from serving import AUTH, ROOT, Server, ids_of, machine, prepare, versions

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
        "warmup": warmup,
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
    lines = [
        "### Two replicas on one PostgreSQL",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + "  ",
        f"Setup: {results['setup']}",
    ]
    if "propagation" in results:
        p = results["propagation"]
        lines += [
            "",
            "#### Propagation of a write from one replica to the other",
            "",
            f"PUTs alternate between the replicas after {p['warmup']} warm-up PUTs.",
            "",
            "| PUTs | delay p50 ms | delay p99 ms | delay max ms | PUT p50 ms | PUT p99 ms |",
            "|---|---|---|---|---|---|",
            f"| {p['puts']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['max_ms']:.1f} "
            f"| {p['put_p50_ms']:.1f} | {p['put_p99_ms']:.1f} |",
            "",
            "Delay: from the writing replica's acknowledgement until the other replica serves "
            "the listing (`GET /v1/listings/{id}` answers 200), measured by the client. PUT: the "
            "write itself, as its client sees it (validation, embedding, commit). The first read "
            f"of the other replica already found the listing in {p['first_read_found']} of "
            f"{p['puts']} writes.",
        ]
    if "mixed" in results:
        m = results["mixed"]
        lines += [
            "",
            "#### Mixed writes, one replica SIGKILLed halfway",
            "",
            f"{m['writes']} writes (PUT 75%, DELETE 25%) by 4 clients on {m['ids']} listing "
            f"ids, alternating between the replicas; replica 2 SIGKILLed after "
            f"{m['killed_after']} writes and started again (serving after "
            f"{m['restarted_after']}); meanwhile the clients write to replica 1. "
            f"{m['seconds']:.0f} s in all.",
            "",
            "| acknowledged | unanswered | 503 | acknowledged writes lost "
            "| listings, replica 1 / 2 | content hash, replica 1 / 2 |",
            "|---|---|---|---|---|---|",
            f"| {m['acknowledged']} | {m['unanswered']} | {m['refused']} | {m['lost']} "
            f"| {m['counts'][0]} / {m['counts'][1]} | `{m['hashes'][0]}` / `{m['hashes'][1]}` |",
            "",
            "Lost: an id whose last acknowledged write is not what a replica serves at the "
            "end, checked on both. An unanswered write (in flight at the kill) may or may not "
            f"be stored, so its id may hold either state ({m['ambiguous_ids']} such ids). The "
            "content hash covers every written id's state as that replica serves it.",
        ]
    if "restart" in results:
        r = results["restart"]
        lines += [
            "",
            "#### PostgreSQL restarted under read and write traffic",
            "",
            "2 readers (similar listings) and 2 writers (PUT 75%, DELETE 25%) on both "
            "replicas; PostgreSQL stopped (`pg_ctl stop -m fast`) and started again "
            f"{r['down_s']:.1f} s later; traffic went on for 5 s after that.",
            "",
            "| reads | reads failed | writes acknowledged | writes answered 503 "
            "| unanswered | acknowledged writes lost | replicas agree |",
            "|---|---|---|---|---|---|---|",
            f"| {r['reads']} | {r['reads_failed']} | {r['acknowledged']} | {r['refused']} "
            f"| {r['unanswered']} | {r['lost']} | {'yes' if r['same'] else 'NO'} |",
        ]
    if "rollout" in results:
        o = results["rollout"]
        lines += [
            "",
            "#### Rollout and rollback",
            "",
            '`POST /v1/admin/reload {"model_dir": V2}` on replica 1, until both replicas '
            "report V2 in `/v1/model`; then `POST /v1/admin/rollback` on replica 2, until both "
            "report the first model again. A client read similar listings from replica 2 "
            "throughout.",
            "",
            "| rollout, both replicas, s | rollback, both replicas, s | reads failed |",
            "|---|---|---|",
            f"| {o['rollout_s']:.1f} | {o['rollback_s']:.1f} | {o['reads_failed']} |",
        ]
    return "\n".join(lines) + "\n"


def generate(work: Path, size: str) -> Path:
    from embedrec.datasets.cars import generate_cars

    data = work / f"cars-{size}"
    if not (data / "listings.parquet").exists():
        generate_cars(data, size=size, seed=0, progress=False)
    return data


def train_second_model(first: Path, second: Path, data: Path) -> None:
    """The rollout's target: the same kind of model, another seed, beside the first one (the
    replicas reload only directories under the first model's parent)."""
    from embedrec.recommender import Recommender

    if not (second / "manifest.json").exists():
        Recommender(model="hybrid", epochs=2, seed=1, progress=False).fit(
            data / "interactions.parquet", data / "listings.parquet"
        ).save(second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="propagation,mixed,restart,rollout")
    parser.add_argument("--puts", type=int, default=200, help="PUTs of the propagation part")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--writes", type=int, default=10_000, help="writes of the mixed part")
    parser.add_argument("--size", default="small", help="car data size (tiny, small)")
    parser.add_argument("--store", help="postgresql:// URL (default: a throwaway cluster)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, few writes")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serving.md")
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedrec-replicas-bench"))
    parser.add_argument("--model", type=Path, help="a hybrid car model directory to serve")
    args = parser.parse_args()
    if args.smoke:
        args.puts, args.warmup, args.size = min(args.puts, 20), 2, "tiny"
        args.writes = min(args.writes, 400)
    parts = set(args.parts.split(","))
    args.work.mkdir(parents=True, exist_ok=True)
    if args.model:  # the data only feeds the rollout's second model and the read traffic
        data, model = generate(args.work, args.size), args.model
    else:
        data, model = prepare(args.work, args.size, 2 if args.size == "tiny" else 5)
    cluster = None
    if args.store:
        store = args.store
        parts.discard("restart")  # a server of yours is not stopped
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from postgres import Cluster, unavailable

        if unavailable():
            raise SystemExit(f"cannot start PostgreSQL: {unavailable()}")
        cluster = Cluster()
        store = cluster.new_database("replicas_bench")

    def restarted(replica: Server) -> Server:
        again = Server(model, store, 1, None)
        wait_ready(again)
        return again

    replicas: list[Server] = []
    results: dict[str, Any] = {}
    try:
        for _ in range(2):
            replicas.append(Server(model, store, 1, None))
        for replica in replicas:
            wait_ready(replica)
        print(f"two replicas up; parts: {', '.join(sorted(parts))}", flush=True)
        if "propagation" in parts:
            results["propagation"] = propagation(replicas, args.puts, args.warmup)
        if "mixed" in parts:
            results["mixed"] = mixed_writes(replicas, restarted, args.writes)
        if "restart" in parts:
            ids = ids_of(data / "listings.parquet", data / "interactions.parquet", 200)[0]
            results["restart"] = database_restart(replicas, cluster.stop, cluster.start, ids)
        if "rollout" in parts:
            second = model.parent / f"{model.name}-v2"
            train_second_model(model, second, data)
            results["rollout"] = rollout(replicas, str(model), str(second))
    finally:
        for replica in replicas:
            replica.stop()
        if cluster is not None:
            cluster.close()
    for name, part in results.items():
        print(name, {k: v for k, v in part.items() if not isinstance(v, list)}, flush=True)
    data_size = "tiny" if args.smoke else args.size
    results |= {
        "command": " ".join(["python benchmarks/replicas.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": {
            **versions(),
            "psycopg": importlib.metadata.version("psycopg"),
            "postgresql": _server_version(cluster),
        },
        "setup": f"two replicas (one process each, as on two hosts) of a hybrid model on the "
        f"`{data_size}` car data, one PostgreSQL on loopback "
        + ("(a throwaway cluster, default settings, fsync on)" if cluster else "(--store)"),
    }
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
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
