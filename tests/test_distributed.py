"""Data-parallel training over torch.distributed: the gradients of a step, torchrun on one
host and on two faked nodes, a rank killed mid-run, and bad input on every rank."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import block_data
from safetensors.torch import load_file, save_file

from embedrec.data.errors import DataError
from embedrec.data.ids import IdMap, shard_of
from embedrec.models.mf import MatrixFactorization
from embedrec.recommender import Recommender, load
from embedrec.training.distributed import Group, OwnUsers
from embedrec.training.trainer import (
    TrainingDiverged,
    check_finite,
    data_parallel,
    validation_sample,
)

BATCH = 48  # per rank; one process takes both ranks' batches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def step_inputs(batch_size: int, group: Group | None = None):
    """A hybrid model on block data, its training pairs and a step's settings. Rank r holds
    the users r, r + 2, ... (their rows only) and their pairs, and its catalogue's share;
    a global batch is rank 0's batch, then rank 1's."""
    events, listings, *_ = block_data(n_users=60, n_listings=40)
    recommender = Recommender(
        model="hybrid",
        dim=8,
        hidden=16,
        feature_dim=4,
        id_dropout=0.0,
        batch_size=batch_size,
        negatives=4 * BATCH,
        device="cpu",
        progress=False,
    )
    prepared = recommender.prepare(events, listings)
    data = prepared.data
    config = recommender.train_config(len(data))
    counts = np.bincount(data.listing_idx, minlength=len(data.listings))
    log_q = torch.as_tensor(np.log(np.maximum(counts, 1) / counts.sum()), dtype=torch.float32)
    trained = torch.as_tensor(np.flatnonzero(counts))
    of_rank = [np.flatnonzero(data.user_idx % 2 == rank) for rank in (0, 1)]
    batches = [positions[:BATCH] for positions in of_rank]  # positions in ``data``
    own = None
    if group is None:
        part, rows, batch = data, torch.as_tensor(np.concatenate(batches)), batches
        model = recommender.build_model(prepared, data)
    else:
        own = OwnUsers.of(data.subset(of_rank[group.rank]), group)
        part = own.local(data.subset(of_rank[group.rank]))
        rows, batch = torch.arange(BATCH), [batches[group.rank]]
        # as a fit's refit does: the catalogue's share comes from a model built before
        earlier = recommender.build_model(prepared, part, group, own)
        model = recommender.build_model(prepared, part, group, own, earlier.listing_inputs())
    uneven = torch.as_tensor(1 + np.concatenate(batch) % 3)  # by the pair, on every rank
    pairs = (
        torch.as_tensor(part.user_idx)[rows],
        torch.as_tensor(part.listing_idx)[rows],
        torch.as_tensor(np.log1p(part.weight))[rows] * uneven,
    )
    model.set_training_pairs(torch.as_tensor(part.user_idx), torch.as_tensor(part.listing_idx))
    model.latest_share = 1.0  # no draw: one process and two ranks draw differently
    return model, own, config, log_q, trained, rows, pairs


def gradients(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: (p.grad.to_dense() if p.grad.is_sparse else p.grad).clone()
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def rank_step(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = Group(rank, 2, torch.device("cpu"), dist.new_group())
    model, own, config, log_q, trained, rows, (users, listings, weights) = step_inputs(BATCH, group)
    model.refresh()
    model.train()
    # the rank holds the features of the listing rows it owns only: every other row's
    # vector comes from its owner, the listing cache (which the histories read) included
    held = {name: len(tensor) for name, tensor in model.catalogue.items()}
    try:  # another rank's row is asked of its owner, never read here
        model.features_of(torch.tensor([1 - rank]))
        refused = False
    except RuntimeError:
        refused = True
    embedded = []
    hook = model.listing_mlp.register_forward_hook(
        lambda _, args, __: embedded.append(len(args[0]))
    )
    cache = model.all_listing_vectors()
    hook.remove()
    # built a few rows at a time, from a row another rank owns on: the same vectors
    model.refresh()
    model.all_listing_vectors(9, batch_size=3)
    in_pieces = model.all_listing_vectors(batch_size=3)
    save_file(
        {
            "cache": cache,
            "in pieces": in_pieces,
            "embedded": torch.tensor(sum(embedded)),
            "held": torch.tensor(sorted(set(held.values()))),
            "refused": torch.tensor(refused),
            "own": torch.as_tensor(own.rows),
            "initial users": model.user_id.weight.detach().clone(),
            **{f"held {name}": rows for name, (rows, _) in model.held_rows.items()},
        },
        f"{out}/cache{rank}.safetensors",
    )
    step = data_parallel(model, group)  # kept: its reducer sums the gradients in backward
    loss = step(
        rows,
        users,
        listings,
        weights,
        log_q,
        trained,
        config,
        torch.Generator().manual_seed(0),
        group,
    )
    loss.backward()
    save_file(gradients(model), f"{out}/rank{rank}.safetensors")
    # once training ends, the model is made whole: every user's and listing's rows, and
    # the whole catalogue's features where a row is asked for
    model.row_split = None
    model.make_whole(group.sum_in_place)
    # the share's features are dropped: the whole model transforms the whole catalogue
    assert not model.catalogue
    model.refresh()
    vectors = model.eval().listing_vectors(torch.arange(40))
    save_file(
        {"vectors": vectors, "users": model.user_id.weight.detach(), "histories": model.histories},
        f"{out}/after{rank}.safetensors",
    )
    dist.destroy_process_group()


def test_two_ranks_at_batch_b_give_the_gradients_of_one_process_at_2b(tmp_path):
    # spawned, not forked: a fork of this process, whose torch has run threads, can hang
    mp.start_processes(rank_step, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    model, _, config, log_q, trained, rows, (users, listings, weights) = step_inputs(2 * BATCH)
    initial_users = model.user_id.weight.detach().clone()
    model.refresh()
    model.train()
    loss = data_parallel(model, None)(
        rows, users, listings, weights, log_q, trained, config, torch.Generator(), None
    )
    loss.backward()
    expected = gradients(model)
    assert config.negatives >= 2 * BATCH  # every listing of the global batch is a negative
    placeholder = torch.tensor([len(initial_users) - 1])  # the row of a user without an id
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        cache = load_file(str(tmp_path / f"cache{rank}.safetensors"))
        # a rank holds its own users' rows, as one process draws them, and the id rows of
        # the listings it owns (every other row), with the placeholders
        own = torch.cat([cache["own"], placeholder])
        assert len(cache["own"]) < len(initial_users) - 1
        torch.testing.assert_close(cache["initial users"], initial_users[own], rtol=0, atol=0)
        held = {k.removeprefix("held "): v for k, v in cache.items() if k.startswith("held ")}
        assert torch.equal(held["user_id.weight"], own)
        n_trained = model.n_trained_listings
        listing_rows = torch.cat([torch.arange(rank, n_trained, 2), torch.tensor([n_trained])])
        assert torch.equal(held["listing_id.weight"], listing_rows)
        assert set(got) == set(expected)
        for name, value in expected.items():
            value = value[held[name]] if name in held else value
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=name)
    # the listing ids' gradients come through the gathered negatives too
    assert any("listing" in name and value.abs().sum() > 0 for name, value in expected.items())
    # each rank held half the catalogue's features, ran the listing tower over its half
    # for the cache, and holds all of the cache
    full = model.all_listing_vectors()
    listings_after = model.eval().listing_vectors(torch.arange(40))
    users_after = [load_file(str(tmp_path / f"after{r}.safetensors")) for r in (0, 1)]
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"cache{rank}.safetensors"))
        torch.testing.assert_close(got["cache"], full)
        torch.testing.assert_close(got["in pieces"], full)
        assert got["held"].tolist() == [len(full) // 2]
        assert bool(got["refused"])
        assert int(got["embedded"]) == len(full) // 2
        torch.testing.assert_close(users_after[rank]["vectors"], listings_after)
    # made whole, both ranks hold every user's rows: each rank's own, as it holds them
    for name in ("users", "histories"):
        assert torch.equal(users_after[0][name], users_after[1][name])
    whole = users_after[0]
    assert whole["users"].shape == initial_users.shape
    assert (whole["histories"] != 0).any(dim=1).all()
    torch.testing.assert_close(whole["histories"], model.histories, rtol=0, atol=0)


def rank_zero_weight_step(rank: int, port: int, out: str, zero_ranks: tuple[int, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = Group(rank, 2, torch.device("cpu"), dist.new_group())
    model, _, config, log_q, trained, rows, (users, listings, weights) = step_inputs(BATCH, group)
    if rank in zero_ranks:
        weights = torch.zeros_like(weights)
    model.refresh()
    model.train()
    step = data_parallel(model, group)
    loss = step(
        rows, users, listings, weights, log_q, trained, config, torch.Generator().manual_seed(0),
        group,
    )  # fmt: skip
    loss.backward()
    held = {f"held {name}": rows for name, (rows, _) in model.held_rows.items()}
    save_file({"loss": loss.detach(), **gradients(model), **held}, f"{out}/rank{rank}.safetensors")
    dist.destroy_process_group()


@pytest.mark.parametrize("zero_ranks", [(1,), (0, 1)], ids=["one rank", "every rank"])
def test_a_batch_whose_weights_sum_to_zero_adds_nothing(tmp_path, zero_ranks):
    """Every rank steps alike, so a rank whose batch weighs 0 still computes a loss: its
    share of the global weighted mean must be 0, and a global batch of weight 0 must give
    a loss and gradients of 0, not the NaN of 0 / 0 that DDP would spread to every rank."""
    mp.start_processes(
        rank_zero_weight_step,
        args=(free_port(), str(tmp_path), zero_ranks),
        nprocs=2,
        start_method="spawn",
    )
    model, _, config, log_q, trained, rows, (users, listings, weights) = step_inputs(2 * BATCH)
    weights = weights.clone()
    for rank in zero_ranks:  # a global batch is rank 0's batch, then rank 1's
        weights[rank * BATCH : (rank + 1) * BATCH] = 0
    model.refresh()
    model.train()
    loss = data_parallel(model, None)(
        rows, users, listings, weights, log_q, trained, config, torch.Generator(), None
    )
    loss.backward()
    expected = gradients(model)
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        held = {k.removeprefix("held "): v for k, v in got.items() if k.startswith("held ")}
        assert torch.isfinite(got["loss"])
        if rank in zero_ranks:
            assert float(got["loss"]) == 0.0
        for name, value in expected.items():
            value = value[held[name]] if name in held else value
            assert torch.isfinite(got[name]).all(), name
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6, msg=name)
    if zero_ranks == (0, 1):
        assert float(loss) == 0.0
        assert all(float(value.abs().sum()) == 0.0 for value in expected.values())
    else:  # rank 0's pairs alone teach: something is learned
        assert any(float(value.abs().sum()) > 0 for value in expected.values())


def rank_stops(rank: int, port: int, out: str) -> None:
    """Rank ``rank``'s outcome of each way a run stops on every rank, written to ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    os.environ.update(RANK=str(rank), WORLD_SIZE="2")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = Group(rank, 2, torch.device("cpu"), dist.new_group())
    model = MatrixFactorization(n_users=3, n_listings=4, dim=2)
    try:
        check_finite(model, float("nan") if rank == 1 else 0.5, 3, group)
        outcome = "went on"
    except TrainingDiverged as exc:
        outcome = str(exc)
    Path(out, f"diverged{rank}.txt").write_text(outcome)
    events, listings, *_ = block_data(n_users=40, n_listings=20)
    # rank 1's one user views after everyone else: all its pairs fall in the time hold-out
    ranks = shard_of(events["user_id"], 2)
    late = events["user_id"] == events["user_id"][ranks == 1].iloc[0]
    events = events[(ranks == 0) | late].copy()
    events.loc[late, "timestamp"] += 10_000_000
    try:
        Recommender(model="mf", dim=4, epochs=1, device="cpu", progress=False).fit(events, listings)
        outcome = "trained"
    except DataError as exc:
        outcome = str(exc)
    Path(out, f"holdout{rank}.txt").write_text(outcome)
    try:  # a window without events, whose rows every rank read
        Recommender(model="mf", dim=4, device="cpu", progress=False).fit(
            events, listings, since=1_600_000_000, until=1_600_000_001
        )
        outcome = "trained"
    except DataError as exc:
        outcome = f"{exc} of {len(events)}"
    Path(out, f"window{rank}.txt").write_text(outcome)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def stopped_ranks(tmp_path_factory) -> Path:
    """What each of two ranks did in ``rank_stops``: one spawn for every test of them."""
    out = tmp_path_factory.mktemp("stopped")
    mp.start_processes(rank_stops, args=(free_port(), str(out)), nprocs=2, start_method="spawn")
    return out


def test_a_rank_whose_training_diverges_stops_every_rank(stopped_ranks):
    expected = "rank 1: training diverged at epoch 3: loss nan; lower lr or check the weights"
    assert [(stopped_ranks / f"diverged{r}.txt").read_text() for r in (0, 1)] == [expected] * 2


def test_a_rank_with_no_pairs_before_the_holdout_stops_every_rank(stopped_ranks):
    # its steps would have nothing to cycle through (a ZeroDivisionError, the others hung)
    outcomes = [(stopped_ranks / f"holdout{r}.txt").read_text() for r in (0, 1)]
    assert outcomes[0] == outcomes[1], outcomes
    assert outcomes[0].startswith("rank 1: no training pairs on this rank before the time")


def test_an_empty_window_counts_the_rows_each_rank_read_once(stopped_ranks):
    outcomes = [(stopped_ranks / f"window{r}.txt").read_text() for r in (0, 1)]
    assert outcomes[0] == outcomes[1], outcomes
    message, rows = outcomes[0].rsplit(" of ", 1)
    window = "since 2020-09-13T12:26:40+00:00 until 2020-09-13T12:26:41+00:00"
    assert message.endswith(f"no events {window} ({rows} rows read)"), message


def validation_matrices() -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    ids = np.array([f"user {i}" for i in range(400)])
    return (
        ids,
        sp.csr_matrix(rng.random((400, 30)) < 0.2),
        sp.csr_matrix(rng.random((400, 30)) < 0.1),
    )


def rank_validation_sample(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    group = Group(rank, 2, torch.device("cpu"), dist.new_group())
    ids, seen, held_out = validation_matrices()
    own = np.flatnonzero(np.arange(len(ids)) % 2 == rank)  # this rank's users, renumbered
    rows = validation_sample(seen[own], held_out[own], 40, IdMap(pd.Index(ids[own])), group)
    Path(out, f"rank{rank}.json").write_text(json.dumps(ids[own][rows].tolist()))
    dist.destroy_process_group()


def test_two_ranks_validate_on_the_users_one_process_validates_on(tmp_path):
    # so that a 2-rank run's validation score compares with a 1-rank run's
    mp.start_processes(
        rank_validation_sample, args=(free_port(), str(tmp_path)), nprocs=2, start_method="spawn"
    )
    ids, seen, held_out = validation_matrices()
    alone = ids[validation_sample(seen, held_out, 40, IdMap(pd.Index(ids)))]
    parts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(alone) == 40 and all(parts)
    assert sorted(parts[0] + parts[1]) == sorted(alone.tolist())


# ------------------------------------------------------------------ torchrun, end to end
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Block data as a dataset partitioned by day, and its listings."""
    root = tmp_path_factory.mktemp("dataset")
    events, listings, *_ = block_data(n_users=120, n_listings=60)
    events["date"] = pd.to_datetime(events["timestamp"], unit="s").dt.strftime("%Y-%m-%d")
    pq.write_to_dataset(
        pa.Table.from_pandas(events, preserve_index=False), root / "events", ["date"]
    )
    listings.to_parquet(root / "listings.parquet")
    return root


def torchrun(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *arguments]


def train_arguments(dataset: Path, out: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "embedrec",
        "train",
        "--interactions",
        str(dataset / "events"),
        "--listings",
        str(dataset / "listings.parquet"),
        "--out",
        str(out),
        "--epochs",
        "3",
        "--dim",
        "8",
        "--device",
        "cpu",
        *extra,
    ]


def environment() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def answers_similar(model_dir: Path) -> None:
    """The model loads and answers ``embedrec similar`` as a user would call it."""
    listing = load(model_dir).listings_.ids[0]
    run = subprocess.run(
        [sys.executable, "-m", "embedrec", "similar", str(model_dir), listing, "-k", "5", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)["results"]) == 5
    report = json.loads((model_dir / "config.json").read_text())["report"]
    assert report["users"] == 120  # every rank's users, summed
    # each rank trained on its own users; the saved model has every user's history and
    # the listings each one saw (which recommendations exclude)
    weights = load_file(str(model_dir / "weights.safetensors"))
    assert (weights["histories.lengths"] > 0).all()
    users = weights["model.user_id.weight"]
    assert len(users) == 121 and (users[:120].abs().sum(dim=1) > 0).all()  # then "no id"
    assert (np.diff(weights["seen.indptr"].numpy()) > 0).all()


def test_torchrun_standalone_trains_on_a_partitioned_dataset(dataset, tmp_path):
    out = tmp_path / "model"
    # the block data's rarest listing (12 events) is too rare to train on, and stays seen
    config = tmp_path / "train.toml"
    config.write_text("[train]\nmin_listing_interactions = 13\n")
    arguments = train_arguments(dataset, out, "--config", str(config))
    command = torchrun("--standalone", "--nproc_per_node=2", *arguments)
    run = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "val recall@10" in run.stderr
    answers_similar(out)
    assert not (tmp_path / "model.checkpoints").exists()  # removed once the model is saved
    # the listings each user saw are those one process finds: a rank numbers its users
    # among its own while it trains, and among all again for them
    single = Recommender(epochs=1, dim=8, min_listing_interactions=13, progress=False)
    single.fit(dataset / "events", dataset / "listings.parquet")
    assert seen_pairs(load(out)) == seen_pairs(single)
    assert single.report_["events_skipped_rare_listing"] == 12
    assert sum(listing == "Wagen 1 ä" for _, listing in seen_pairs(load(out))) > 0


def seen_pairs(model: Recommender) -> set[tuple[str, str]]:
    seen = model.seen_.tocoo()
    return set(zip(model.users_.ids[seen.row], model.listings_.ids[seen.col], strict=True))


def test_a_warm_start_on_two_ranks_keeps_the_histories_of_users_without_new_events(
    dataset, tmp_path
):
    days = sorted(d.name.removeprefix("date=") for d in (dataset / "events").iterdir())
    base, update = tmp_path / "base", tmp_path / "update"
    first = [sys.executable, *train_arguments(dataset, base, "--until", days[-1])]
    run = subprocess.run(first, capture_output=True, text=True, env=environment(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    nightly = train_arguments(dataset, update, "--since", days[-1], "--init-from", str(base))
    command = torchrun("--standalone", "--nproc_per_node=2", *nightly)
    run = subprocess.run(command, capture_output=True, text=True, env=environment(), timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    before = load_file(str(base / "weights.safetensors"))
    after = load_file(str(update / "weights.safetensors"))
    events = pd.read_parquet(dataset / "events", filters=[("date", "=", days[-1])])
    # the window's events of every rank, each read once
    files = len(list((dataset / "events" / f"date={days[-1]}").iterdir()))
    read = f"read {len(events):,} events since {days[-1]}T00:00:00+00:00 until - ({len(events):,}"
    assert f"{read} rows read from {files} file(s))" in run.stderr, run.stderr[-3000:]
    # the window trained on spans every rank's events
    report = json.loads((update / "config.json").read_text())["report"]
    span = [pd.Timestamp(report[k]) for k in ("first_event", "last_event")]
    ends = (events["timestamp"].min(), events["timestamp"].max())  # epoch seconds
    assert span == [pd.Timestamp(t, unit="s", tz="UTC") for t in ends]
    old = len(before["histories.lengths"])
    quiet = torch.as_tensor(~load(update).users_.ids[:old].isin(events["user_id"]))
    assert 0 < int(quiet.sum()) < old
    # a user with no events on the new day has the history the old model had, once: the
    # ranks without the user's events kept it too, and only one of them counts
    for name in ("histories.rows", "histories.lengths"):
        assert torch.equal(after[name][:old][quiet], before[name][quiet])
    # and the id vector it had: its rank held the old model's row and trained it on nothing
    users = "model.user_id.weight"
    assert torch.equal(after[users][:old][quiet], before[users][:old][quiet])
    assert not torch.equal(after[users][:old][~quiet], before[users][:old][~quiet])


def test_two_nodes_faked_with_c10d_rendezvous(dataset, tmp_path):
    out = tmp_path / "model"
    port = free_port()
    launchers = [
        subprocess.Popen(
            torchrun(
                "--nnodes=2",
                f"--node_rank={node}",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                "--rdzv_id=embedrec-test",
                # the ranks search settings too: each decides on the slowest one's time
                *train_arguments(dataset, out, "--tune", "4"),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment(),
        )
        for node in (0, 1)
    ]
    outputs = [launcher.communicate(timeout=300)[0] for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], outputs
    answers_similar(out)
    tuning = load(out).report_["tuning"]
    assert tuning["tried"] and tuning["chosen"] in [t["changes"] for t in tuning["tried"]]
    assert "tuning: " in outputs[0]  # the first rank speaks for the run


def test_a_killed_rank_restarts_and_finishes_from_its_checkpoint(dataset, tmp_path):
    out = tmp_path / "model"
    checkpoints = tmp_path / "model.checkpoints"
    config = tmp_path / "train.toml"
    # many small steps: the rank is killed well before the end
    config.write_text("[train]\nbatch_size = 32\nepochs = 12\npatience = 20\n")
    command = torchrun(
        "--standalone",
        "--nproc_per_node=2",
        "--max-restarts=3",
        *train_arguments(dataset, out, "--config", str(config), "--checkpoint-every", "5"),
    )
    launcher = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment(),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not (checkpoints / "latest.json").exists():
        assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    ranks = children(launcher.pid)
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    output = launcher.communicate(timeout=300)[0]
    assert launcher.returncode == 0, output[-3000:]
    assert "resumed at epoch" in output
    answers_similar(out)


def test_ranks_stop_with_one_line_each_when_their_launcher_is_killed(dataset, tmp_path):
    # they trained on to the end, or waited at the next collective for a lost rank
    out = tmp_path / "model"
    config = tmp_path / "train.toml"
    config.write_text("[train]\nbatch_size = 32\npatience = 1000\n")
    arguments = train_arguments(dataset, out, "--config", str(config), "--checkpoint-every", "5")
    arguments[arguments.index("--epochs") + 1] = "1000"  # still training when it is killed
    launcher = subprocess.Popen(
        torchrun("--standalone", "--nproc_per_node=2", *arguments),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
        start_new_session=True,
    )
    ranks = []
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "model.checkpoints" / "latest.json").exists():
            assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
        ranks = children(launcher.pid)
        assert len(ranks) == 2
        os.kill(launcher.pid, signal.SIGKILL)
        stderr = launcher.communicate(timeout=30)[1]  # the ranks hold it open until they end
    finally:
        for rank in ranks:  # where they did not stop
            with contextlib.suppress(ProcessLookupError):
                os.kill(rank, signal.SIGKILL)
    stopped = sorted(line for line in stderr.splitlines() if "launcher" in line)
    assert stopped == [
        f"error: rank {rank}: its torchrun launcher (pid {launcher.pid}) is gone; stopping"
        for rank in (0, 1)
    ], stderr[-3000:]
    assert not out.exists()


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (torchrun's ranks), by /proc."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(found)


# ------------------------------------------------------------------ bad input on every rank
BAD_INPUT = [  # (interactions, more arguments, what each rank's line says)
    ("{root}/events/date=2099-01-01", (), "not found"),  # a missing partition
    ("{root}/corrupt", (), "corrupt"),  # a file that is not Parquet
    ("nosuch://bucket/events", (), "nosuch"),  # an unknown URI scheme
    ("{root}/events", ("--since", "2099-01-01"), "no events since 2099"),  # an empty window
]


def test_bad_input_stops_every_rank_with_one_line(dataset, tmp_path):
    corrupt = dataset / "corrupt" / "date=2026-01-01"
    corrupt.mkdir(parents=True, exist_ok=True)
    (corrupt / "part-0.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    started = time.monotonic()
    runs = {}
    for case, (interactions, extra, _) in enumerate(BAD_INPUT):  # at once: each waits on imports
        arguments = train_arguments(dataset, tmp_path / f"model-{case}", *extra)
        arguments[arguments.index("--interactions") + 1] = interactions.format(root=dataset)
        runs[case] = subprocess.Popen(
            torchrun("--standalone", "--nproc_per_node=2", *arguments),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(),
        )
    for case, run in runs.items():
        stderr = run.communicate(timeout=120)[1]
        assert run.returncode != 0
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 2, stderr[-3000:]  # one line from each rank
        assert all(BAD_INPUT[case][2] in line.lower() for line in errors), errors
        # torchrun's launcher reports the failed ranks with its own traceback; none from ours
        frames = [line for line in stderr.splitlines() if line.strip().startswith("File ")]
        assert not [frame for frame in frames if "embedrec" in frame], frames
    assert time.monotonic() - started < 90


# ------------------------------------------------------------------ restarts and the store
def test_each_restart_on_one_host_gets_keys_of_its_own(monkeypatch, capsys):
    from embedrec.training.distributed import _this_attempt

    store = dist.HashStore()
    store.set("rank_1", "the lost rank's address")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    restarted = _this_attempt(store)
    assert not restarted.check(["rank_1"])
    restarted.set("rank_1", "new")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert not _this_attempt(store).check(["rank_1"])  # the next restart sees neither
    # several hosts: no common restart count, so the store is left alone and rank 0 warns
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert _this_attempt(store) is store
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in capsys.readouterr().err


def test_exchanged_rows_are_padded_to_few_sizes():
    from embedrec.models.base import padded_to_few_sizes

    sizes = set()
    for n in range(1, 5000):
        rows = torch.arange(n)
        padded = padded_to_few_sizes(rows)
        assert torch.equal(padded[:n], rows) and (padded[n:] == n - 1).all()
        assert len(padded) <= n + n / 8
        sizes.add(len(padded))
    # at most eight sizes per power of two: a kernel's cache of plans per shape stays small
    assert len(sizes) <= 8 * 13


# ------------------------------------------------------------------ ranks and cores
def test_ranks_that_fill_the_host_exactly_each_keep_to_cores_of_their_own():
    from embedrec.training.distributed import rank_cores

    assert [rank_cores([1, 0], r, 2, 1) for r in range(2)] == [[0], [1]]
    assert [rank_cores([7, 4, 6, 5], r, 2, 2) for r in range(2)] == [[4, 5], [6, 7]]
    # a host with cores to spare, a single rank, or more threads than cores: the scheduler's
    assert rank_cores([0, 1, 2, 3], 0, 2, 1) == []
    assert rank_cores([0, 1], 0, 1, 2) == []
    assert rank_cores([0, 1], 1, 2, 2) == []


PINNED_RANK = """
import os, sys, torch
from pathlib import Path
from embedrec.training.distributed import Group, finish_distributed
Group.join(torch.device("cpu"))
rank = os.environ["LOCAL_RANK"]
Path(sys.argv[1], rank).write_text(str(sorted(os.sched_getaffinity(0))))
finish_distributed()
"""


def test_a_rank_keeps_to_its_cores_under_torchrun(tmp_path, monkeypatch):
    from embedrec.training.distributed import keep_to_own_cores, rank_cores

    script = tmp_path / "rank.py"
    script.write_text(PINNED_RANK)
    run = subprocess.run(
        torchrun("--standalone", "--nproc_per_node=2", str(script), str(tmp_path)),
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    host = sorted(os.sched_getaffinity(0))
    for rank in range(2):
        assert (tmp_path / str(rank)).read_text() == str(rank_cores(host, rank, 2, 1) or host)
    monkeypatch.setenv("EMBEDREC_PIN_RANKS", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(len(host)))
    assert keep_to_own_cores() == [] and sorted(os.sched_getaffinity(0)) == host


FAULTING_RANK = """
import ctypes, sys
from embedrec.recommender import Recommender

def fault_in_native_code(self, *args, **kwargs):
    ctypes.string_at(0)  # a read of address 0: a segmentation fault

# a library fit, after it has joined the other ranks
Recommender.prepare = fault_in_native_code
Recommender(epochs=1, dim=8, device="cpu").fit(sys.argv[1], sys.argv[2])
"""


def test_a_rank_that_faults_in_native_code_prints_where_it_was(dataset, tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(FAULTING_RANK)
    events, listings = str(dataset / "events"), str(dataset / "listings.parquet")
    run = subprocess.run(
        torchrun("--standalone", "--nproc_per_node=2", str(script), events, listings),
        capture_output=True,
        text=True,
        env=environment(),
        timeout=120,
    )
    assert run.returncode != 0
    output = run.stdout + run.stderr
    assert "Segmentation fault" in output and "fault_in_native_code" in output, output[-3000:]
