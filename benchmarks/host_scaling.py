"""What weak scaling two ranks on this host allow at best, whatever the training code does.

    python benchmarks/host_scaling.py [--steps 60] [--rounds 3]
    python benchmarks/host_scaling.py --smoke        # a few steps, seconds

Each rank runs the same fixed step, under ``torchrun --standalone`` with 1 and with 2 ranks
(gloo on 127.0.0.1, one thread per rank), taking turns for ``--rounds`` rounds:

- compute: a training step's kind of work, with no model of ours: rows gathered at random
  from a table of 1M x 32 floats (the id and feature lookups), a two-layer MLP forward and
  backward over a batch of 4,096, and the rows' gradients added back into the table;
- the same, then the collectives of a 2-rank ``hybrid`` step on the 70-day car data, with
  their sizes (docs/benchmarks-distributed.md): an all-reduce of 737,536 floats (the dense
  gradients), an all-gather of 0.39 MB (the sparse rows), two of 0.27 MB (the listing
  vectors exchanged and their gradients) and two of 0.05 MB (the gathered negatives);
- the same bytes in four times as many collectives (each tensor sent in 4 parts): a real
  step has more collectives than these six (the exchange's counts, rows and vectors, DDP's
  sparse gradients in several rounds per table), and each costs a round trip.

Efficiency is the 1-rank step time over the 2-rank step time (the same work per rank), the
median of the rounds. The compute row is what two ranks sharing this host's cores and memory
bandwidth reach with no communication at all; the second adds the bytes that the training's
steps send; the third, the cost of a collective whatever its size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distributed import free_port  # noqa: E402 - the other torchrun benchmark's port picker

BATCH = 4096
TABLE_ROWS = 1_000_000
DIM = 32
HIDDEN = 1024
LOOKUPS = 64  # rows gathered per pair: the listing's, its features' and text tokens, a history's
DENSE_FLOATS = 737_536
GATHERS_MB = (0.39, 0.27, 0.27, 0.05, 0.05)
VARIANTS = ("compute", "compute + collectives", "compute + collectives in 4 parts each")
PARTS = 4


# ---------------------------------------------------------------------------- in a rank
def rank_main(variant: str, steps: int, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    generator = torch.Generator().manual_seed(rank)
    table = torch.randn(TABLE_ROWS, DIM, generator=generator)
    mlp = torch.nn.Sequential(
        torch.nn.Linear(DIM, HIDDEN), torch.nn.GELU(), torch.nn.Linear(HIDDEN, DIM)
    )
    dense = torch.zeros(DENSE_FLOATS)
    gathers = [torch.zeros(int(mb * 2**20) // 4) for mb in GATHERS_MB]

    parts = PARTS if variant.endswith("parts each") else 1
    dense_parts = dense.chunk(parts)
    gather_parts = [part for tensor in gathers for part in tensor.chunk(parts)]

    def step() -> None:
        rows = torch.randint(TABLE_ROWS, (BATCH, LOOKUPS), generator=generator)
        inputs = table[rows].mean(dim=1).requires_grad_()
        loss = mlp(inputs).square().mean()
        loss.backward()
        table.index_add_(0, rows[:, 0], inputs.grad * -0.01)
        mlp.zero_grad()
        if "collectives" in variant:
            for part in dense_parts:
                dist.all_reduce(part)
            for tensor in gather_parts:
                dist.all_gather([torch.empty_like(tensor) for _ in range(world)], tensor)

    for _ in range(5):
        step()
    dist.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    seconds = (time.perf_counter() - started) / steps
    if rank == 0:
        out.write_text(json.dumps({"seconds_per_step": seconds}))
    dist.destroy_process_group()


# ---------------------------------------------------------------------------- the driver
def run(variant: str, ranks: int, steps: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={ranks}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            __file__,
            "--rank-variant",
            variant,
            "--steps",
            str(steps),
            "--rank-out",
            str(out),
        ]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
        return json.loads(out.read_text())["seconds_per_step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rank-variant", help=argparse.SUPPRESS)
    parser.add_argument("--rank-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_variant:
        rank_main(args.rank_variant, args.steps, args.rank_out)
        return
    steps, rounds = (3, 1) if args.smoke else (args.steps, args.rounds)
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for variant in VARIANTS:
            for ranks in (1, 2):
                times.setdefault((variant, ranks), []).append(run(variant, ranks, steps))
    print(
        f"`python benchmarks/host_scaling.py --steps {steps} --rounds {rounds}`; Python "
        f"{platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, one "
        "thread per rank.\n"
    )
    print("| step | 1 rank: ms per step | 2 ranks: ms per step | efficiency (median) |")
    print("|---|---|---|---:|")
    for variant in VARIANTS:
        one, two = times[(variant, 1)], times[(variant, 2)]
        ratios = [a / b for a, b in zip(one, two, strict=True)]
        print(
            f"| {variant} | {', '.join(f'{t * 1000:.1f}' for t in one)} | "
            f"{', '.join(f'{t * 1000:.1f}' for t in two)} | {statistics.median(ratios):.2f} |"
        )


if __name__ == "__main__":
    main()
