"""``embedrec serve`` as an orchestrator sees it: a burst of new connections is shared by the
workers; a worker killed outright, or hung, is replaced by a working one; SIGTERM to the
parent stops the whole server; and a reload does not stall the reads answered meanwhile."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest
import test_serving as serving

from embedrec.serving.shared import shared_recommender

Server, worker_of = serving.Server, serving.worker_of
cars, model_dir = serving.cars, serving.model_dir  # the session fixtures, made once

pytestmark = pytest.mark.server


def workers_answering(url: str, tries: int = 64) -> set[str]:
    """The worker pids that answer new connections (the kernel spreads them)."""
    seen: set[str] = set()
    for _ in range(tries):
        try:
            with httpx.Client(base_url=url, timeout=10) as client:
                seen.add(worker_of(client))
        except httpx.TransportError:
            continue
        if len(seen) == 2:
            break
    return seen


def two_answering(url: str, within_s: float, gone: int | None = None) -> set[str]:
    """The two workers answering (a second one may still be loading), once ``gone`` is no
    longer one of them."""
    deadline = time.monotonic() + within_s
    while True:
        answering = workers_answering(url)
        if len(answering) == 2 and str(gone) not in answering:
            return answering
        assert time.monotonic() < deadline, f"two workers, {gone} not one: {answering}"
        time.sleep(0.5)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_new_connections_are_shared_by_the_workers_whichever_is_awake(model_dir, tmp_path):
    server = Server(model_dir, tmp_path / "store.sqlite", "--workers", "2")
    try:
        workers = two_answering(server.url, within_s=90)
        awake, busy = (int(pid) for pid in sorted(workers))
        # a burst of connections arrives while one worker is busy (here: stopped): on one
        # shared listening socket the other accepted all of them and kept them, however long
        # they lived; on a socket per worker each waits in its own worker's queue
        os.kill(busy, signal.SIGSTOP)
        try:
            connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
            for connection in connections:
                connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            time.sleep(1)  # time enough for the awake worker to accept all it can
        finally:
            os.kill(busy, signal.SIGCONT)
        served: Counter[str] = Counter()
        for connection in connections:
            with connection, connection.makefile("rb") as answer:
                text = answer.read().decode()
            served[text.split('worker="')[1].split('"')[0]] += 1
        # the kernel hashes each connection to a worker: 100 fair coin flips fall below 25
        # on one side about once in 3 million runs
        assert served.keys() == {str(awake), str(busy)}, served
        assert min(served.values()) >= 25, served
    finally:
        server.stop()


def test_workers_map_one_copy_of_the_model_and_listings_and_still_take_writes(
    cars, model_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the copy is written
    listings = str(cars / "listings.parquet")
    server = Server(model_dir, tmp_path / "store.sqlite", "--workers", "2", "--listings", listings)
    clients: dict[str, httpx.Client] = {}
    try:
        deadline = time.monotonic() + 90
        while len(clients) < 2:
            assert time.monotonic() < deadline, f"only workers {set(clients)} answered"
            client = httpx.Client(base_url=server.url, timeout=30)
            worker = worker_of(client)
            if clients.setdefault(worker, client) is not client:
                client.close()
        cache = tmp_path / "cache" / "embedrec" / "serving"
        files = [*cache.glob("catalogue-*.arrow"), *cache.glob("catalogue-*.npy")]
        assert len(files) == 3, files  # the table, the vectors, their model rows
        # and the model: its weights and feature tensors, its training listings' table
        files += [*cache.glob("model-*.safetensors"), *cache.glob("model-*.arrow")]
        assert len(files) == 5, files
        for worker in clients:  # each worker maps the same files, holding no copy of its own
            mapped = Path(f"/proc/{worker}/maps").read_text()
            assert all(str(f) in mapped for f in files), worker
        created = clients[min(clients)].put(
            "/v1/listings/shared-1", json=serving.NEW_CAR, headers=serving.AUTH
        )
        assert created.status_code == 201
        for client in clients.values():  # the files stay as they were; each worker has it
            assert client.get("/v1/listings/shared-1").json()["make"] == "Nissan"
            assert client.get("/v1/listings/shared-1/similar").status_code == 200
    finally:
        for client in clients.values():
            client.close()
        server.stop()


def test_a_single_worker_restarts_from_the_shared_files(cars, model_dir, tmp_path, monkeypatch):
    """One worker writes the catalogue, its vector index and the model's tensors once; a
    restart maps and loads them instead of embedding and indexing again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "embedrec" / "serving"
    args = (model_dir, tmp_path / "store.sqlite", "--listings", str(cars / "listings.parquet"))
    written: dict[Path, int] = {}
    for start in range(2):
        server = Server(*args)
        try:
            (index,) = cache.glob("catalogue-*.index-*/vectors.npy")  # the saved index
            files = [index, *cache.glob("catalogue-*.npy"), *cache.glob("model-*.safetensors")]
            assert len(files) == 4, files
            mapped = Path(f"/proc/{server.process.pid}/maps").read_text()
            # the vectors and tensors are mapped, the index's once a restart loaded it
            unmapped = [f for f in files[start == 0 :] if str(f) not in mapped]
            assert not unmapped, unmapped
            if start == 0:
                written = {f: f.stat().st_mtime_ns for f in files}
            else:  # loaded, not written again
                assert {f: f.stat().st_mtime_ns for f in files} == written
            listing = server.get("/v1/listings:random").json()["listing_id"]
            assert server.get(f"/v1/listings/{listing}/similar").status_code == 200
        finally:
            server.stop()


def test_killed_and_hung_workers_are_replaced_and_sigterm_stops_the_server(model_dir, tmp_path):
    token = "token-from-a-file-" + os.urandom(8).hex()
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    server = Server(
        model_dir, tmp_path / "store.sqlite", "--workers", "2", "--worker-timeout", "10",
        "--token-file", str(token_file), token=None,
    )  # fmt: skip
    try:
        before = two_answering(server.url, within_s=90)
        victim = int(sorted(before)[0])
        # the file changes (a rotation) before the worker dies: its replacement checks the
        # token that the supervisor read at start, as the other worker does, not the new file
        token_file.write_text("rotated-" + os.urandom(8).hex() + "\n")
        os.kill(victim, signal.SIGKILL)
        # a generous bound for a loaded CI machine; replacement takes seconds (docs/serving.md)
        after = two_answering(server.url, within_s=90, gone=victim)
        replacement = (after - before).pop()
        answered = set()
        for i in range(16):  # new connections reach both workers (but for 2**-15)
            with httpx.Client(base_url=server.url, timeout=30) as one:
                auth = {"Authorization": f"Bearer {token}"}
                assert (
                    one.put(f"/v1/listings/r{i}", json=serving.NEW_CAR, headers=auth).status_code
                    == 201
                )
                answered.add(worker_of(one))
        assert replacement in answered
        # a hung worker (stopped: alive, answering nothing) is killed and replaced after the
        # supervisor's health-check timeout (--worker-timeout), not left holding its share
        # of connections
        hung = int(sorted(after)[0])
        stopped = time.monotonic()
        os.kill(hung, signal.SIGSTOP)
        # killed (and reaped) after --worker-timeout's 10 s, well before the default's 30
        while _running(hung):
            assert time.monotonic() - stopped < 25, "the hung worker outlived --worker-timeout"
            time.sleep(0.2)
        after = two_answering(server.url, within_s=90, gone=hung)
        answer = server.get("/v1/random-listing")
        assert answer.status_code == 200
        listing = answer.json()["listing_id"]
        assert server.get(f"/v1/listings/{listing}/similar").status_code == 200
        children = [int(pid) for pid in after]
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(30)  # raises TimeoutExpired if SIGTERM did not stop it
        for pid in children:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        server.stop()


def _waiting_for_lock(path: Path) -> set[int]:
    """The processes waiting for a flock on ``path`` (Linux's /proc/locks marks them ->)."""
    inode = f":{path.stat().st_ino} "
    lines = Path("/proc/locks").read_text().splitlines()
    return {int(line.split()[5]) for line in lines if "->" in line and inode in line}


def test_sigterm_stops_workers_still_loading_at_once(model_dir, tmp_path):
    # the workers' shared files in a cache of this test's own, whose lock the test holds:
    # each worker waits for it while loading, as one does behind another writing the files
    cache = tmp_path / "cache"
    shared_recommender(model_dir, cache / "embedrec" / "serving")
    (lock,) = (cache / "embedrec" / "serving").glob("model-*.lock")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "EMBEDREC_API_TOKEN": serving.TOKEN}
    env.pop("EMBEDREC_CACHE", None)
    command = [sys.executable, "-m", "embedrec.serving.command", str(model_dir)]
    command += ["--workers", "2", "--port", str(serving.free_port())]
    command += ["--store", str(tmp_path / "store.sqlite")]
    with open(lock) as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        process = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            deadline = time.monotonic() + serving.START_WITHIN_S
            while len(_waiting_for_lock(lock)) < 2:  # both workers are loading
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            workers = _waiting_for_lock(lock)
            process.send_signal(signal.SIGTERM)
            # before, the workers went on loading (here: waiting for the lock, for ever) and
            # the server with them, whatever --shutdown-timeout said
            assert process.wait(30) == 0
            for pid in workers:
                assert not _running(pid)
            log = process.stderr.read()
            assert log.count("stopped while loading (SIGTERM)") == 2
            assert "Traceback" not in log
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            process.stderr.close()


def test_reads_are_answered_while_a_reload_builds_the_next_model(cars, model_dir, tmp_path):
    # enough listings that building the next state (embedding all of them) takes a while
    listings = pd.read_parquet(cars / "listings.parquet")
    copies = [listings.assign(listing_id=listings["listing_id"] + f"-{k}") for k in range(50)]
    many = tmp_path / "listings.parquet"
    pd.concat(copies, ignore_index=True).to_parquet(many)
    server = Server(model_dir, tmp_path / "store.sqlite", "--listings", str(many))
    try:
        listing = server.get("/v1/random-listing").json()["listing_id"]
        finished: list[str] = []

        def reload() -> None:
            answer = httpx.post(
                f"{server.url}/v1/admin/reload", json={}, headers=serving.AUTH, timeout=300
            )
            finished.append(str(answer.status_code))

        reloading = threading.Thread(target=reload)
        reloading.start()
        answered_meanwhile = 0
        while reloading.is_alive():
            assert server.get("/healthz/live").status_code == 200
            assert server.get(f"/v1/listings/{listing}/similar").status_code == 200
            answered_meanwhile += reloading.is_alive()
        reloading.join()
        assert finished == ["200"]
        # the event loop never waited for the reload: reads went on while it built
        assert answered_meanwhile >= 3
    finally:
        server.stop()
