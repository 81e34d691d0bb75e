"""Load test of ``embedrec serve``: throughput and latency, a soak, and SIGKILL durability.

    python benchmarks/serving.py                  # small data and 1M listings, workers 1 and 2
    python benchmarks/serving.py --smoke          # tiny data, a few requests (seconds)
    python benchmarks/serving.py --soak-seconds 600

Two catalogues: the ``small`` car data with a hybrid model trained on it, and the 1,000,000
listings of the ``large`` car data with a hybrid model trained on its first 1M events
(``common.py``). The server runs as its own process tree; the load comes from a second process:
``wrk`` when installed (closed loop, ``--concurrency`` connections), else an async httpx client.
The soak (fixed rate, mixed reads and writes) and the SIGKILL test use httpx. Results go to
``--out`` (docs/serving.md) with the machine, the versions and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from report_page import write_generated

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROOT = Path(__file__).resolve().parents[1]
CLIENTS = {"wrk": "wrk, one thread, a Lua script", "httpx": "async httpx"}


# ---------------------------------------------------------------------- server
class Server:
    """``python -m embedrec.serving.command`` on a free loopback port."""

    def __init__(self, model: Path, store: Path, workers: int, listings: Path | None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "embedrec.serving.command", str(model), "--port",
                   str(self.port), "--store", str(store), "--workers", str(workers),
                   "--log-level", "warning"]  # fmt: skip
        if listings:
            command += ["--listings", str(listings)]
        env = {**os.environ, "EMBEDREC_API_TOKEN": TOKEN}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        self.started = time.perf_counter()
        self.workers = workers
        self._wait()
        self.startup_s = time.perf_counter() - self.started

    def _wait(self) -> None:
        import httpx

        deadline = time.monotonic() + 900
        seen: set[str] = set()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server died while starting")
            try:
                # every worker must be up: a fresh connection lands on any of them
                text = httpx.get(f"{self.url}/metrics", timeout=5).text
                seen |= {x.split('worker="')[1].split('"')[0] for x in text.splitlines()
                         if 'worker="' in x}  # fmt: skip
                if len(seen) >= self.workers:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def rss_mb(self) -> float:
        import psutil

        parent = psutil.Process(self.process.pid)
        procs = [parent, *parent.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20

    def memory(self) -> dict[str, Any]:
        """The server's proportional set size (shared pages split between the processes that
        map them: the sum is what the server costs) and each worker's RSS and unique pages."""
        import psutil

        parent = psutil.Process(self.process.pid)
        info = {p.pid: p.memory_full_info() for p in [parent, *parent.children(recursive=True)]}
        workers = [m for pid, m in info.items() if pid != parent.pid] or [info[parent.pid]]
        return {
            "pss_mb": round(sum(m.pss for m in info.values()) / 2**20),
            "workers": [
                {
                    "rss_mb": round(m.rss / 2**20),
                    "uss_mb": round(m.uss / 2**20),
                    "pss_mb": round(m.pss / 2**20),
                }
                for m in workers
            ],  # fmt: skip
        }

    def stop(self, sig: int = signal.SIGTERM) -> None:
        import psutil

        if sig == signal.SIGKILL:  # the whole tree, as a crash would
            for child in psutil.Process(self.process.pid).children(recursive=True):
                child.kill()
        self.process.send_signal(sig)
        self.process.wait(60)


# ---------------------------------------------------------------------- load client
def client_run(config: dict[str, Any]) -> dict[str, Any]:
    """Runs in a second process: closed-loop (or fixed-rate) requests, latencies in ms."""
    return asyncio.run(_client(config))


async def _client(config: dict[str, Any]) -> dict[str, Any]:
    import httpx

    rng = random.Random(config.get("seed", 0))
    ids, users = config["ids"], config["users"]
    scenario, rate = config["scenario"], config.get("rate")
    latencies: list[float] = []
    errors: dict[str, int] = {}
    written: list[str] = []
    stop_at = time.perf_counter() + config["seconds"]
    limits = httpx.Limits(max_connections=config["concurrency"])
    counter = [0]

    def request() -> tuple[str, str, dict[str, Any]]:
        kind = scenario
        if scenario == "mixed":
            kind = rng.choices(["similar", "recommend", "put", "delete"], [70, 10, 15, 5])[0]
            if kind == "delete" and not written:
                kind = "put"
        if kind == "similar":
            return "GET", f"/v1/listings/{rng.choice(ids)}/similar", {}
        if kind == "recommend":
            return "GET", f"/v1/users/{rng.choice(users)}/recommendations", {}
        if kind == "delete":
            listing = written.pop(rng.randrange(len(written)))
            return "DELETE", f"/v1/listings/{listing}", {"headers": AUTH}
        counter[0] += 1
        new = f"bench-{config.get('seed', 0)}-{counter[0]}"
        body = {"make": rng.choice(["Nissan", "BMW", "Skoda"]), "model": "X",
                "year": rng.randint(2005, 2024), "price": rng.randint(2000, 60000),
                "lat": 50 + rng.random() * 3, "lon": 8 + rng.random() * 5}  # fmt: skip
        return "PUT", f"/v1/listings/{new}", {"json": body, "headers": AUTH}

    async with httpx.AsyncClient(base_url=config["url"], limits=limits, timeout=30) as client:

        async def worker(slot: int) -> None:
            next_at = time.perf_counter()
            while time.perf_counter() < stop_at:
                if rate:  # fixed rate: each slot sends every concurrency/rate seconds
                    next_at += config["concurrency"] / rate
                    await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                method, path, kwargs = request()
                started = time.perf_counter()
                try:
                    answer = await client.request(method, path, **kwargs)
                    status = answer.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append((time.perf_counter() - started) * 1000)
                if status not in (200, 201):
                    errors[str(status)] = errors.get(str(status), 0) + 1
                elif method == "PUT":  # deletable once acknowledged, not while in flight
                    written.append(path.rsplit("/", 1)[1])

        started = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(config["concurrency"])))
        elapsed = time.perf_counter() - started
    values = np.asarray(latencies) if latencies else np.zeros(1)
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "errors": errors,
    }


_CLIENT: list[Any] = []  # the client process, started once: a spawn costs seconds


def load(config: dict[str, Any]) -> dict[str, Any]:
    if not _CLIENT:
        _CLIENT.append(multiprocessing.get_context("spawn").Pool(1))
        atexit.register(_CLIENT[0].terminate)
    return _CLIENT[0].apply(client_run, (config,))


# wrk (C, one thread) spends far less CPU per request than a Python client, which matters when
# client and server share two cores; each scenario is a Lua script over the same ids.
WRK_SCRIPT = """
local ids, users, n, scenario, prefix = {}, {}, 0
function init(args)
  scenario, prefix = args[1], args[4]
  for line in io.lines(args[2]) do ids[#ids + 1] = line end
  for line in io.lines(args[3]) do users[#users + 1] = line end
  math.randomseed(#prefix)
end
local makes = {"Nissan", "BMW", "Skoda"}
function request()
  if scenario == "similar" then
    return wrk.format("GET", "/v1/listings/" .. ids[math.random(#ids)] .. "/similar")
  elseif scenario == "recommend" then
    return wrk.format("GET", "/v1/users/" .. users[math.random(#users)] .. "/recommendations")
  end
  n = n + 1
  local body = string.format(
    '{"make":"%s","model":"X","year":%d,"price":%d,"lat":%.4f,"lon":%.4f}',
    makes[math.random(3)], math.random(2005, 2024), math.random(2000, 60000),
    50 + math.random() * 3, 8 + math.random() * 5)
  return wrk.format("PUT", "/v1/listings/" .. prefix .. n, {
    ["Authorization"] = "Bearer TOKEN", ["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "status": %d, '
    .. '"socket": %d}\\n', summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_load(config: dict[str, Any], work: Path) -> dict[str, Any]:
    """One scenario driven by ``wrk`` (closed loop, ``concurrency`` connections)."""
    script, ids, users = work / "load.lua", work / "ids.txt", work / "users.txt"
    script.write_text(WRK_SCRIPT.replace("TOKEN", TOKEN))
    ids.write_text("\n".join(config["ids"]))
    users.write_text("\n".join(config["users"]))
    prefix = f"wrk-{time.time_ns()}-"
    command = ["wrk", "-t1", f"-c{config['concurrency']}", f"-d{config['seconds']:g}s",
               "--latency", "-s", str(script), config["url"], "--", config["scenario"],
               str(ids), str(users), prefix]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(x for x in output.splitlines() if x.startswith("WRK "))
    result = json.loads(line[4:])
    errors = {k: result.pop(k) for k in ("status", "socket") if result[k]}
    result.pop("socket", None), result.pop("status", None)
    return {**result, "rps": result["requests"] / result["seconds"], "errors": errors}


# ---------------------------------------------------------------------- data
def prepare(work: Path, size: str, epochs: int) -> tuple[Path, Path]:
    from embedrec.datasets.cars import generate_cars
    from embedrec.recommender import Recommender

    data, model = work / f"cars-{size}", work / f"model-{size}"
    if not (data / "listings.parquet").exists():
        generate_cars(data, size=size, seed=0, progress=False)
    if not (model / "manifest.json").exists():
        Recommender(model="hybrid", epochs=epochs, progress=False).fit(
            data / "interactions.parquet", data / "listings.parquet"
        ).save(model)
    return data, model


def ids_of(listings: Path, interactions: Path, n: int = 20000) -> tuple[list[str], list[str]]:
    import pandas as pd

    ids = pd.read_parquet(listings, columns=["listing_id"])["listing_id"]
    users = pd.read_parquet(interactions, columns=["user_id"])["user_id"]
    rng = np.random.default_rng(1)
    return (
        [str(i) for i in ids.iloc[rng.integers(0, len(ids), n)]],
        [str(u) for u in users.drop_duplicates().sample(min(n, users.nunique()), random_state=1)],
    )


# ---------------------------------------------------------------------- scenarios
def throughput(
    server: Server, ids, users, seconds: float, concurrency: int, client: str, work: Path,
    repeats: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Each scenario ``repeats`` times; the run with the median requests per second is
    reported (a single best run overstates what a rerun gives), with every run's figures."""
    out = {}
    for scenario in ("similar", "recommend", "put"):
        config = {"url": server.url, "scenario": scenario, "seconds": seconds,
                  "concurrency": concurrency, "ids": ids, "users": users}  # fmt: skip
        run = (lambda c: wrk_load(c, work)) if client == "wrk" else load
        run({**config, "seconds": min(2.0, seconds)})  # warm-up (caches, first allocations)
        runs = sorted((run(config) for _ in range(repeats)), key=lambda r: r["rps"])
        out[scenario] = {**runs[len(runs) // 2], "runs": [
            {"rps": r["rps"], "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]} for r in runs
        ]}  # fmt: skip
        print(f"  {scenario:<10} {json.dumps(out[scenario])}", flush=True)
        if scenario == "similar":  # read-only so far: what the shared catalogue saves
            out["memory"] = server.memory()
            print(f"  memory     {json.dumps(out['memory'])}", flush=True)
    return out


def writes(server: Server, puts: int = 300, batches: int = 10, runs: int = 3) -> dict[str, Any]:
    """Single PUTs one at a time (latency) and batches of 1,000 listings through
    ``POST /v1/listings:batch`` one after the other (listings per second); median of ``runs``."""
    import httpx

    rng = random.Random(3)

    def car(listing_id: str) -> dict[str, Any]:
        return {"listing_id": listing_id, "make": rng.choice(["Nissan", "BMW", "Skoda"]),
                "model": "X", "year": rng.randint(2005, 2024), "price": rng.randint(2000, 60000),
                "lat": 50 + rng.random() * 3, "lon": 8 + rng.random() * 5}  # fmt: skip

    p50s, p99s, rates = [], [], []
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for run in range(runs):
            latencies = []
            for i in range(puts):
                body = car(f"w{run}-{i}")
                started = time.perf_counter()
                answer = client.put(f"/v1/listings/{body.pop('listing_id')}", json=body,
                                    headers=AUTH)  # fmt: skip
                latencies.append((time.perf_counter() - started) * 1000)
                answer.raise_for_status()
            p50s.append(float(np.percentile(latencies, 50)))
            p99s.append(float(np.percentile(latencies, 99)))
            bodies = [{"listings": [car(f"b{run}-{b}-{i}") for i in range(1000)]}
                      for b in range(batches)]  # fmt: skip
            started = time.perf_counter()
            for body in bodies:
                client.post("/v1/listings:batch", json=body, headers=AUTH).raise_for_status()
            rates.append(1000 * batches / (time.perf_counter() - started))
    return {"puts": puts, "batches": batches, "runs": runs,
            "put_p50_ms": float(np.median(p50s)), "put_p99_ms": float(np.median(p99s)),
            "batch_listings_per_s": float(np.median(rates))}  # fmt: skip


def soak(server: Server, ids, users, seconds: float, rate: float) -> dict[str, Any]:
    before = server.rss_mb()
    config = {"url": server.url, "scenario": "mixed", "seconds": seconds, "rate": rate,
              "concurrency": 16, "ids": ids, "users": users, "seed": 7}  # fmt: skip
    result = load(config)
    result.update(rss_start_mb=round(before, 1), rss_end_mb=round(server.rss_mb(), 1))
    return result


def durability(model: Path, work: Path, listings: Path | None) -> dict[str, Any]:
    """PUT bursts, SIGKILL the server mid-burst, restart: count the acknowledged writes."""
    import httpx

    store = work / "durability.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    server = Server(model, store, 1, listings)
    acked: list[str] = []
    body = {"make": "Nissan", "model": "Qashqai", "year": 2018, "price": 23221}

    def burst(slot: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(100_000):
                try:
                    answer = client.put(f"/v1/listings/k{slot}-{i}", json=body, headers=AUTH)
                except httpx.TransportError:
                    return
                if answer.status_code == 201:
                    acked.append(f"k{slot}-{i}")

    threads = [threading.Thread(target=burst, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    while time.perf_counter() - started < 5 or len(acked) < 50:  # kill in the middle of it
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    for thread in threads:
        thread.join()
    server = Server(model, store, 1, listings)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        found = sum(client.get(f"/v1/listings/{i}").status_code == 200 for i in acked)
    server.stop()
    return {"acknowledged": len(acked), "found_after_restart": found}


# ---------------------------------------------------------------------- report
def versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("embedrec", "fastapi", "uvicorn", "starlette", "pydantic", "torch", "numpy",
             "faiss-cpu", "httpx")  # fmt: skip
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = "?"
    return out


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu}), load average {load:.1f}"


def report(results: dict[str, Any]) -> str:
    t = results["throughput_config"]
    lines = [
        "## Benchmark",
        "",
        "Commands: " + ", ".join(f"`{c}`" for c in results["commands"]) + "  ",
        f"Machine: {machine()}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + "  ",
        f"Load: a second process ({CLIENTS[t['client']]}), {t['concurrency']} connections, "
        f"closed loop, {t['seconds']:g} s per scenario after a 2 s warm-up; latency measured by "
        "the client, which shares the machine's cores with the server.",
        "",
        "Each scenario ran as often as `--repeats` says; the row is the run with the median "
        "requests per second, and the last column gives every run's req/s.",
        "",
        "| catalogue | workers | endpoint | requests | req/s | p50 ms | p99 ms | errors "
        "| runs, req/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["throughput"]:
        for endpoint, r in row["results"].items():
            if endpoint == "memory":
                continue
            runs = " / ".join(f"{x['rps']:.0f}" for x in r.get("runs", [r]))
            lines.append(
                f"| {row['catalogue']} | {row['workers']} | {endpoint} | {r['requests']} | "
                f"{r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{sum(r['errors'].values())} {r['errors'] or ''} | {runs} |"
            )
    lines += ["", "Start-up (model load, catalogue embedding, index build):", ""]
    lines += [f"- {r['catalogue']}, {r['workers']} worker(s): {r['startup_s']:.1f} s"
              for r in results["throughput"]]  # fmt: skip
    memory = [r for r in results["throughput"] if "memory" in r["results"]]
    if memory:
        lines += ["", "Memory after the similar-listing runs (before any write), from "
                  "`/proc/PID/smaps_rollup`: PSS splits a shared page between the processes "
                  "that map it, so the server's PSS is what it costs; USS is a worker's pages "
                  "of its own.", "",
                  "| catalogue | workers | server PSS MB | per worker RSS MB | per worker USS MB |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for row in memory:
            m = row["results"]["memory"]
            rss = " / ".join(str(w["rss_mb"]) for w in m["workers"])
            uss = " / ".join(str(w["uss_mb"]) for w in m["workers"])
            lines.append(
                f"| {row['catalogue']} | {row['workers']} | {m['pss_mb']} | {rss} | {uss} |"
            )
    if "soak" in results:
        s = results["soak"]
        c = results["soak_config"]
        lines += ["", f"### Soak ({c['seconds']:g} s at {c['rate']:g} req/s, "
                  f"{c['catalogue']}, {c['workers']} worker(s); "
                  "70% similar, 10% recommendations, 15% PUT, 5% DELETE)", "",
                  f"requests {s['requests']}, errors {s['errors'] or 0}, p50 {s['p50_ms']:.1f} "
                  f"ms, p99 {s['p99_ms']:.1f} ms, RSS {s['rss_start_mb']} MB at start, "
                  f"{s['rss_end_mb']} MB at end"]  # fmt: skip
    if "writes" in results:
        lines += ["", "### Writes (one client, one request at a time)", "",
                  "| catalogue | workers | PUT p50 ms | PUT p99 ms | batch listings/s |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for row in results["writes"]:
            r = row["results"]
            lines.append(f"| {row['catalogue']} | {row['workers']} | {r['put_p50_ms']:.1f} | "
                         f"{r['put_p99_ms']:.1f} | {r['batch_listings_per_s']:.0f} |")  # fmt: skip
        lines += ["", f"Median of {r['runs']} runs of {r['puts']} PUTs and {r['batches']} "
                  "batches of 1,000 new listings each."]  # fmt: skip
    d = results["durability"]
    lines += ["", "### SIGKILL during a burst of writes", "",
              f"{d['catalogue']}, 8 threads writing: "
              f"{d['acknowledged']} PUTs acknowledged before the kill, "
              f"{d['found_after_restart']} found after the restart."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "serving.md")
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedrec-serving-bench"))
    parser.add_argument("--seconds", type=float, default=15.0, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=8, help="connections in flight")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario (median)")
    parser.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto",
                        help="load generator (auto: wrk when installed)")  # fmt: skip
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--soak-seconds", type=float, default=0.0)
    parser.add_argument("--soak-rate", type=float, default=200.0)
    parser.add_argument("--soak-workers", type=int, default=2)
    parser.add_argument(
        "--parts",
        default="throughput,soak,durability",
        help="what to run (throughput, soak, durability, writes); results of other parts "
        "are kept from earlier runs",
    )
    parser.add_argument("--sizes", default="small,large", help="catalogues: small, large (1M)")
    parser.add_argument("--data", type=Path, help="generated car data to reuse")
    parser.add_argument("--model", type=Path, help="hybrid model trained on --data to reuse")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.concurrency, args.workers = 0.5, 4, "1"
        args.work = args.work.with_name(args.work.name + "-smoke")
        args.soak_seconds = args.soak_seconds or 2.0
        args.soak_rate, args.soak_workers, args.client = 20.0, 1, "httpx"
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "httpx"
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = set(args.sizes.split(","))
    if args.data and args.model:
        data, model = args.data, args.model
    elif "small" in sizes or args.smoke:
        data, model = prepare(args.work, "tiny" if args.smoke else "small", 2 if args.smoke else 5)
    # (name, model, listings to serve (None: the training ones), its users' interactions)
    catalogues = []
    if "small" in sizes or args.smoke:
        catalogues.append((f"{'tiny' if args.smoke else 'small'} data", model, None, None))
    if not args.smoke and "large" in sizes:
        from common import large_model

        large, listings, interactions = large_model(args.work)
        catalogues.append(("1,000,000 listings (large data)", large, listings, interactions))
    # results of earlier runs are kept, so that one part (--parts soak) can be run again
    saved = args.work / "results.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.exists() else {}
    command = " ".join(["python benchmarks/serving.py", *sys.argv[1:]])
    parts = set(args.parts.split(","))
    throughput_rows, write_rows = [], []
    for name, model, listings, interactions in catalogues:
        ids, users = ids_of(
            listings or data / "listings.parquet", interactions or data / "interactions.parquet"
        )
        for workers in map(int, args.workers.split(",")):
            last = name == catalogues[-1][0]
            soaks = "soak" in parts and args.soak_seconds and last and workers == args.soak_workers
            if "throughput" not in parts and "writes" not in parts and not soaks:
                continue
            store = args.work / f"store-{workers}-{len(throughput_rows)}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store}{suffix}").unlink(missing_ok=True)
            print(f"{name}, {workers} worker(s)", flush=True)
            server = Server(model, store, workers, listings)
            try:
                if "throughput" in parts:
                    row = {"catalogue": name, "workers": workers, "startup_s": server.startup_s}
                    repeats = 1 if args.smoke else args.repeats
                    row["results"] = throughput(
                        server, ids, users, args.seconds, args.concurrency, args.client, args.work,
                        repeats,
                    )  # fmt: skip
                    throughput_rows.append(row)
                if "writes" in parts:
                    write_rows.append({"catalogue": name, "workers": workers,
                                       "results": writes(server)})  # fmt: skip
                    print(f"  writes {json.dumps(write_rows[-1]['results'])}", flush=True)
                if soaks:
                    results["soak"] = soak(server, ids, users, args.soak_seconds, args.soak_rate)
                    results["soak_config"] = {"seconds": args.soak_seconds, "rate": args.soak_rate,
                                              "workers": workers, "catalogue": name}  # fmt: skip
                    print(f"  soak {json.dumps(results['soak'])}", flush=True)
            finally:
                server.stop()
    if "throughput" in parts:
        results["throughput"] = throughput_rows
        results["throughput_config"] = {"client": args.client, "seconds": args.seconds,
                                        "concurrency": args.concurrency}  # fmt: skip
    if "writes" in parts:
        results["writes"] = write_rows
    if "durability" in parts:
        results["durability"] = {**durability(model, args.work, listings), "catalogue": name}
        print(f"durability {json.dumps(results['durability'])}", flush=True)
    results["commands"] = [*results.get("commands", [])[-2:], command]
    saved.write_text(json.dumps(results, indent=1))
    if not all(key in results for key in ("throughput", "durability")):
        print(f"results so far in {saved}; run the other parts for a report")
        return
    write_generated(args.out, report(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
