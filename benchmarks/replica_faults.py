"""Faults under traffic for two replicas on one PostgreSQL (run by ``benchmarks/replicas.py``).

- ``mixed_writes``: PUTs and DELETEs spread over both replicas by several clients; halfway
  one replica is SIGKILLed and started again. Every acknowledged write must be served by both
  replicas at the end, and both must hold the same listings.
- ``database_restart``: PostgreSQL is stopped and started again during read and write
  traffic. Reads must never fail; writes may answer 503 meanwhile; no acknowledged write lost.
- ``rollout``: a reload to a second model on one replica reaches the other; a rollback on the
  other brings both back.

Each client owns its listing ids, so the last acknowledged write of an id is its expected
state. A write that got no answer (the replica died) or a 503 may or may not be stored: its
id may then hold either state, and the check accepts both.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
from serving import AUTH, Server

DELETED = None  # the expected state of a deleted (or never written) listing


class Ledger:
    """What each listing id may hold now, by the answers its writes got."""

    def __init__(self) -> None:
        self.states: dict[str, set[int | None]] = {}
        self.acknowledged = 0
        self.unanswered = 0
        self.refused = 0  # 503: the store was away
        self.lock = threading.Lock()

    def record(self, listing: str, state: int | None, outcome: str) -> None:
        with self.lock:
            possible = self.states.setdefault(listing, {DELETED})
            if outcome == "ack":
                self.acknowledged += 1
                self.states[listing] = {state}
            else:  # the write may or may not have been committed
                self.unanswered += outcome == "unanswered"
                self.refused += outcome == "refused"
                possible.add(state)


def write(client: httpx.Client, listing: str, price: int | None) -> str:
    """One PUT (a price) or DELETE (None); its outcome for the ledger."""
    try:
        if price is None:
            answer = client.delete(f"/v1/listings/{listing}", headers=AUTH)
        else:
            body = {"make": "Nissan", "model": "Qashqai", "year": 2018, "price": price,
                    "lat": 51.05, "lon": 13.74}  # fmt: skip
            answer = client.put(f"/v1/listings/{listing}", json=body, headers=AUTH)
    except httpx.TransportError:
        return "unanswered"
    if answer.status_code in (200, 201) or (price is None and answer.status_code == 404):
        return "ack"  # a DELETE of a listing not there (any more) leaves it deleted
    if answer.status_code == 503:
        return "refused"
    raise RuntimeError(f"{listing}: unexpected {answer.status_code}: {answer.text[:300]}")


def served_state(client: httpx.Client, listing: str) -> int | None:
    answer = client.get(f"/v1/listings/{listing}")
    if answer.status_code == 404:
        return DELETED
    answer.raise_for_status()
    return int(answer.json()["price"])


def wait_caught_up(replicas: list[Server], timeout: float = 120) -> None:
    """Until both replicas are ready and serve as many listings as each other, twice."""
    deadline, stable = time.monotonic() + timeout, 0
    while stable < 2:
        if time.monotonic() > deadline:
            raise RuntimeError("the replicas did not converge")
        try:
            ready = [httpx.get(f"{r.url}/healthz/ready", timeout=10) for r in replicas]
            counts = {httpx.get(f"{r.url}/v1/model", timeout=10).json()["listings"]
                      for r in replicas}  # fmt: skip
            agreed = all(a.status_code == 200 for a in ready) and len(counts) == 1
            stable = stable + 1 if agreed else 0
        except httpx.TransportError:
            stable = 0
        time.sleep(0.5)


def check(replicas: list[Server], ledger: Ledger) -> dict[str, Any]:
    """Lost acknowledged writes, and each replica's listing count and content hash."""
    wait_caught_up(replicas)
    result: dict[str, Any] = {"lost": 0, "ambiguous_ids": 0, "counts": [], "hashes": []}
    for replica in replicas:
        digest = hashlib.sha256()
        with httpx.Client(base_url=replica.url, timeout=30) as client:
            for listing in sorted(ledger.states):
                state, possible = served_state(client, listing), ledger.states[listing]
                result["lost"] += state not in possible
                digest.update(json.dumps([listing, state]).encode())
            result["counts"].append(client.get("/v1/model").json()["listings"])
        result["hashes"].append(digest.hexdigest()[:16])
    result["ambiguous_ids"] = sum(len(p) > 1 for p in ledger.states.values())
    result["same"] = len(set(result["hashes"])) == 1 and len(set(result["counts"])) == 1
    return result


def mixed_writes(
    replicas: list[Server], restart: Callable[[Server], Server], total: int, clients: int = 4
) -> dict[str, Any]:
    """``total`` writes by ``clients`` threads over both replicas; replica 1 SIGKILLed and
    restarted when half of them are done."""
    ledger, done, lock = Ledger(), [0], threading.Lock()
    up = [True, True]
    ids_per_client = max(1, total // clients // 8)  # each id written about 8 times

    errors: list[BaseException] = []

    def client_loop(slot: int) -> None:
        try:
            writes_of(slot)
        except BaseException as exc:  # re-raised by the main thread
            errors.append(exc)

    def writes_of(slot: int) -> None:
        rng = random.Random(slot)
        sessions: dict[str, httpx.Client] = {}
        try:
            for i in range(total // clients):
                target = replicas[i % 2] if up[i % 2] else replicas[0]
                client = sessions.get(target.url)
                if client is None:
                    client = sessions[target.url] = httpx.Client(base_url=target.url, timeout=30)
                listing = f"mixed-{slot}-{rng.randrange(ids_per_client)}"
                price = None if rng.random() < 0.25 else 10_000 + rng.randrange(10_000)
                ledger.record(listing, price, write(client, listing, price))
                with lock:
                    done[0] += 1
        finally:
            for client in sessions.values():
                client.close()

    threads = [threading.Thread(target=client_loop, args=(s,)) for s in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while done[0] < total // 2 and not errors:
        time.sleep(0.01)
    killed_at = done[0]
    replicas[1].stop(signal.SIGKILL)
    up[1] = False
    replicas[1] = restart(replicas[1])
    up[1] = True
    restarted_at = done[0]
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    elapsed = time.perf_counter() - started
    return {
        "writes": done[0],
        "seconds": elapsed,
        "killed_after": killed_at,
        "restarted_after": restarted_at,
        "acknowledged": ledger.acknowledged,
        "unanswered": ledger.unanswered,
        "refused": ledger.refused,
        "ids": len(ledger.states),
        **check(replicas, ledger),
    }


def database_restart(
    replicas: list[Server], stop_database: Callable[[], None], start_database: Callable[[], None],
    listing_ids: list[str], down_s: float = 5.0,
) -> dict[str, Any]:  # fmt: skip
    """Reads and writes on both replicas while PostgreSQL stops for ``down_s`` and restarts."""
    ledger, stop = Ledger(), threading.Event()
    reads = {"ok": 0, "failed": 0}
    lock = threading.Lock()

    def reader(slot: int) -> None:
        rng = random.Random(100 + slot)
        with httpx.Client(base_url=replicas[slot % 2].url, timeout=30) as client:
            while not stop.is_set():
                listing = rng.choice(listing_ids)
                try:
                    status = client.get(f"/v1/listings/{listing}/similar").status_code
                except httpx.TransportError:
                    status = 0
                with lock:
                    reads["ok" if status == 200 else "failed"] += 1

    def writer(slot: int) -> None:
        rng = random.Random(200 + slot)
        clients = [httpx.Client(base_url=r.url, timeout=30) for r in replicas]
        try:
            i = 0
            while not stop.is_set():
                listing = f"restart-{slot}-{rng.randrange(200)}"
                price = None if rng.random() < 0.25 else 10_000 + rng.randrange(10_000)
                ledger.record(listing, price, write(clients[i % 2], listing, price))
                i += 1
        finally:
            for client in clients:
                client.close()

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(2)]
    threads += [threading.Thread(target=writer, args=(s,)) for s in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(3)
    stopped = time.perf_counter()
    stop_database()
    time.sleep(down_s)
    start_database()
    restarted = time.perf_counter()
    time.sleep(5)
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "down_s": restarted - stopped,
        "reads": reads["ok"] + reads["failed"],
        "reads_failed": reads["failed"],
        "acknowledged": ledger.acknowledged,
        "refused": ledger.refused,
        "unanswered": ledger.unanswered,
        **check(replicas, ledger),
    }


def rollout(replicas: list[Server], first: str, second: str) -> dict[str, Any]:
    """Reload ``second`` on replica 0 until replica 1 serves it; roll back on replica 1 until
    both serve ``first`` again. Reads go on meanwhile; none may fail."""
    failed, stop = [0], threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=replicas[1].url, timeout=30) as client:
            listing = client.get("/v1/random-listing").json()["listing_id"]
            while not stop.is_set():
                failed[0] += client.get(f"/v1/listings/{listing}/similar").status_code != 200

    def served() -> list[str]:
        # the path is shown to a caller with the API token only
        answers = [httpx.get(f"{r.url}/v1/model", headers=AUTH, timeout=30) for r in replicas]
        return [answer.json()["model_dir"] for answer in answers]

    def until(expected: str, started: float) -> float:
        deadline = started + 300
        while any(m != expected for m in served()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas do not serve {expected}: {served()}")
            time.sleep(0.1)
        return time.monotonic() - started

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        started = time.monotonic()
        answer = httpx.post(f"{replicas[0].url}/v1/admin/reload", json={"model_dir": second},
                            headers=AUTH, timeout=300)  # fmt: skip
        answer.raise_for_status()
        rollout_s = until(answer.json()["model_dir"], started)
        started = time.monotonic()
        answer = httpx.post(f"{replicas[1].url}/v1/admin/rollback", headers=AUTH, timeout=300)
        answer.raise_for_status()
        rollback_s = until(answer.json()["model_dir"], started)
    finally:
        stop.set()
        thread.join()
    return {"rollout_s": rollout_s, "rollback_s": rollback_s, "reads_failed": failed[0]}
