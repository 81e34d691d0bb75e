"""Mutation scores of four core modules, measured with mutmut on the fast tests.

    pip install -e '.[dev,mutation]'
    python benchmarks/mutation.py                          # all modules, into docs/mutation.md
    python benchmarks/mutation.py --modules store,bundle   # some of them
    python benchmarks/mutation.py --source OLD --label before   # another checkout's code+tests

For each module the checkout's ``src/``, ``tests/`` and ``pyproject.toml`` are copied into a
scratch folder, whose pyproject gets a ``[tool.mutmut]`` section naming that module alone and
the test files that exercise it (those of ``MODULES`` the checkout has), run without the
``slow``, ``server`` and ``browser`` tests. ``mutmut run --max-children 1`` (one worker: the
machine is shared) then changes one operator, constant or call at a time and runs the tests
that reach the changed function; ``mutmut results --all true`` gives each mutant's fate. A
mutant is killed when a test fails or runs past mutmut's time limit; a mutant in code no
selected test reaches ("no tests") counts as survived. ``--sample trainer=80`` runs a fixed
random sample of a module's mutants instead of all (a score then estimates the module's).
The table goes between markers in ``--out``, one block per ``--label``, so the "before" and
"after" tables sit side by side and a rerun replaces only its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from report_page import write_generated

ROOT = Path(__file__).resolve().parents[1]
FAST = "not slow and not server and not browser"
# module (under src/embedrec) -> the fast test files that exercise it
MODULES = {
    "io": ("data/io.py", ["tests/test_data_contract.py", "tests/test_io_errors.py"]),
    "bundle": (
        "bundle.py",
        [
            "tests/test_recommender.py::test_save_load_round_trip",
            "tests/test_recommender.py::test_corrupt_truncated_and_foreign_directories",
            "tests/test_recommender.py::test_save_refuses_to_replace_a_directory_that_is_not_a_model",
            "tests/test_bundle.py",
        ],
    ),
    "trainer": (
        "training/trainer.py",
        [
            "tests/test_training.py",
            "tests/test_parallel.py",
            "tests/test_early_stopping.py",
            "tests/test_parallel_state.py",
            "tests/test_trainer.py",
        ],
    ),
    "store": ("serving/store.py", ["tests/test_store.py"]),
}
PLACEHOLDER = "tests/test_mutation_placeholder.py"  # where a checkout has no test for a module
KILLED = ("killed", "timeout")  # a test failed, or the tests ran past mutmut's time limit
TIMEOUT_MARGIN_S = 300.0
TEST_TIMEOUT_S = 90
SAMPLE_SEED = 0


def mutmut_section(module: str, tests: list[str]) -> str:
    settings = {
        "source_paths": ["src"],
        "only_mutate": [f"src/embedrec/{module}"],
        # a test that hangs (a mutant can loop forever) fails after TEST_TIMEOUT_S
        "pytest_add_cli_args": [
            "-p",
            "no:cacheprovider",
            "-m",
            FAST,
            f"--timeout={TEST_TIMEOUT_S}",
        ],
        "pytest_add_cli_args_test_selection": tests,
        "use_git_change_detection": False,
        # mutmut times a mutant's tests without their fixtures (a model fitted once per
        # session is fitted again for every mutant) and kills them after 15 times that: slow
        # fixtures counted as killed by timeout. Its limit is a backstop here; the per-test
        # timeout above finds the mutants that hang
        "timeout_constant": TIMEOUT_MARGIN_S,
        "timeout_multiplier": 3.0,
    }
    lines = ["", "[tool.mutmut]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def present(source: Path, test: str) -> bool:
    """Whether the checkout has the test file, or the test function of a node id."""
    file, _, function = test.partition("::")
    if not (source / file).exists():
        return False
    return not function or f"def {function}(" in (source / file).read_text(encoding="utf-8")


def mutmut(folder: Path, *args: str) -> subprocess.CompletedProcess:
    # mutmut forks a process per mutant from one that ran the tests: a fork after OpenMP
    # started its threads (any torch computation) hangs at the child's first parallel step,
    # so torch runs on one thread here
    threads = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, **threads},
    )


def statuses(folder: Path) -> dict[str, str]:
    """Each mutant's status as ``mutmut results --all true`` prints it."""
    out = {}
    for line in mutmut(folder, "results", "--all", "true").stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            out[name] = status
    return out


def measure(source: Path, name: str, work: Path, sample: int | None, log) -> dict:  # noqa: ANN001
    module, wanted = MODULES[name]
    folder = work / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for part in ("src", "tests"):
        shutil.copytree(source / part, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
    tests = [t for t in wanted if present(source, t)]
    if not tests:
        (folder / PLACEHOLDER).write_text("def test_placeholder():\n    pass\n")
    pyproject = (source / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(
        pyproject + mutmut_section(module, tests or [PLACEHOLDER])
    )
    log(f"{name}: mutating src/embedrec/{module} with {', '.join(tests) or 'no test file'}")
    started = time.perf_counter()
    chosen: list[str] = []
    if sample:
        # the first mutant of each function: creates every mutant and the test statistics
        done = mutmut(folder, "run", "--max-children", "1", "*__mutmut_1")
        every = sorted(statuses(folder)) if done.returncode == 0 else []
        chosen = sorted(random.Random(SAMPLE_SEED).sample(every, min(sample, len(every))))
        log(f"{name}: a fixed sample of {len(chosen)} of its {len(every)} mutants")
        if not chosen:
            (work / f"{name}.log").write_text(done.stdout + done.stderr)
            raise SystemExit(f"{name}: mutmut created no mutants; see {work}/{name}.log")
    done = mutmut(folder, "run", "--max-children", "1", *chosen)
    seconds = time.perf_counter() - started
    if done.returncode != 0 and not (tests or "could not find any test case" in done.stdout):
        (work / f"{name}.log").write_text(done.stdout + done.stderr)
        raise SystemExit(f"{name}: mutmut failed (exit {done.returncode}); see {work}/{name}.log")
    status = statuses(folder)
    if not tests:  # mutmut stops before it records a result: every mutant survives
        meta = json.loads((folder / "mutants" / "src" / "embedrec" / f"{module}.meta").read_text())
        status = dict.fromkeys(meta["exit_code_by_key"], "no tests")
    every_mutant = len(status)
    if chosen:
        status = {m: status[m] for m in chosen}
    (work / f"{name}-survivors.txt").write_text(
        "".join(f"{m}: {s}\n" for m, s in sorted(status.items()) if s not in KILLED)
    )
    killed = sum(s in KILLED for s in status.values())
    total = sum(s != "skipped" for s in status.values())
    row = {
        "module": f"src/embedrec/{module}",
        "tests": tests,
        "killed": killed,
        "survived": total - killed,
        "no_tests": sum(s == "no tests" for s in status.values()),
        "total": total,
        "mutants": every_mutant,
        "seconds": round(seconds),
    }
    log(
        f"{name}: {killed}/{total} killed ({100 * killed / max(total, 1):.0f}%), "
        f"{row['no_tests']} in code no test reaches, {seconds:.0f} s"
    )
    return row


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def shown(tests: list[str]) -> str:
    """Test files by name; node ids of one file as "FILE (N tests)"."""
    counts: dict[str, int] = {}
    for test in tests:
        file, _, function = test.partition("::")
        counts[Path(file).name] = counts.get(Path(file).name, 0) + (1 if function else 0)
    return ", ".join(f"{f} ({n} tests)" if n else f for f, n in counts.items()) or "none"


def render(rows: list[dict], label: str, command: str, source: str) -> str:
    cpu = platform.processor() or platform.machine()
    versions = ", ".join(
        f"{p} {version(p)}" for p in ("mutmut", "pytest", "hypothesis", "torch", "numpy", "pandas")
    )
    out = [
        f"### {label}",
        "",
        f"- Command: `{command}`",
        f"- Code and tests: {source}",
        f"- Machine: {platform.system()} {platform.release()}, {cpu}, {os.cpu_count()} cores, "
        f"one mutmut worker; Python {platform.python_version()}; {versions}",
        f'- Tests: the files named per module, run with `-m "{FAST}"`',
        "",
        "| module | tests | killed | survived | of which no test reaches | run | score | time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        tests = shown(r["tests"])
        share = r["killed"] / max(r["total"], 1)
        score = f"{100 * share:.0f}%"
        run = str(r["total"])
        if r["total"] < r["mutants"]:  # a sample: the score with its standard error
            error = 100 * (share * (1 - share) / max(r["total"], 1)) ** 0.5
            score += f" ± {error:.0f}"
            run += f" of {r['mutants']} (sample)"
        out.append(
            f"| {r['module']} | {tests} | {r['killed']} | {r['survived']} | {r['no_tests']} | "
            f"{run} | {score} | {r['seconds']} s |"
        )
    return "\n".join(out) + "\n"


def write_block(path: Path, label: str, body: str) -> None:
    """The block for ``label`` between its own markers; appended to the page the first time."""
    start = f"<!-- generated:mutation-{label}:start -->"
    end = f"<!-- generated:mutation-{label}:end -->"
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if start not in text and end not in text:
            path.write_text(text.rstrip() + f"\n\n{start}\n{end}\n", encoding="utf-8")
    else:
        path.write_text(
            "# Mutation scores\n\nWritten by `benchmarks/mutation.py`; see its docstring.\n\n"
            f"{start}\n{end}\n",
            encoding="utf-8",
        )
    write_generated(path, body, start, end)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(MODULES), help="comma-separated names")
    parser.add_argument("--source", default=str(ROOT), help="checkout whose code and tests run")
    parser.add_argument("--label", default="after", help="names this run's table in --out")
    parser.add_argument("--sample", default="", help="NAME=COUNT,...: mutants sampled")
    parser.add_argument(
        "--describe", help="what --source holds, for the page (default: this checkout)"
    )
    parser.add_argument("--work", help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "mutation.md"), help="'-': print")
    args = parser.parse_args(argv)
    args.modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    try:
        args.sample = {
            name.strip(): int(count)
            for name, count in (part.split("=") for part in args.sample.split(",") if part)
        }
    except ValueError:
        parser.error(f"--sample: expected NAME=COUNT,..., got {args.sample!r}")
    unknown = [m for m in [*args.modules, *args.sample] if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the page names no folder of this machine: --source and --work show as placeholders
    given = list(argv if argv is not None else sys.argv[1:])
    for option, placeholder in (("--source", "DIR"), ("--work", "SCRATCH")):
        if option in given[:-1]:
            given[given.index(option) + 1] = placeholder
    given = [
        f"{a.split('=')[0]}=DIR" if a.startswith(("--source=", "--work=")) else a for a in given
    ]
    command = "python benchmarks/mutation.py " + " ".join(
        f'"{a}"' if " " in a else a for a in given
    )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    source = Path(args.source).resolve()
    with tempfile.TemporaryDirectory(prefix="mutation-") as scratch:
        work = Path(args.work) if args.work else Path(scratch)
        rows = [measure(source, name, work, args.sample.get(name), log) for name in args.modules]
    shown = args.describe or (
        "this checkout" if source == ROOT else "another checkout (`--source`)"
    )
    body = render(rows, args.label, command.strip(), shown)
    if args.out == "-":
        print(body)
    else:
        write_block(Path(args.out), args.label, body)
        log(f"wrote {args.out}")
    for r in rows:
        print(f"{r['module']}: {r['killed']}/{r['total']} killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
