"""Mutation testing of the numerical core with mutmut, shard by shard, and its report.

    python benchmarks/mutation.py run [SHARD ...]   run the shards (default: all, in ORDER)
    python benchmarks/mutation.py report            the table and every survivor's diff
    python benchmarks/mutation.py check SHARD TEST... [--only PATTERN...]
        each survivor and no-test mutant of SHARD (or those matching a PATTERN), activated
        alone, against TESTs (node ids)

benchmarks/mutation.sh runs both, niced. The files mutated and the tests selected are
``[tool.mutmut]`` in pyproject.toml; a shard is one module's mutants (trainer: the Trainer's state
and resume only). mutmut runs each mutant against the selected tests that call the function it
changes, and keeps the results in ``mutants/``; a shard run again runs all its mutants again
(mutmut re-runs the mutants its command line names), the other shards' results stay.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINER_STATE = ["state_dict", "load_state_dict", "save"]
SHARDS = {
    "losses": ["spikeguide.methods.losses.*"],
    "enof": ["spikeguide.methods.enof.*"],
    "hybrid": ["spikeguide.methods.hybrid.*"],
    "surrogates": ["spikeguide.neurons.surrogates.*"],
    "eligibility": ["spikeguide.ratepass.eligibility.*"],
    "ratebp": ["spikeguide.methods.ratebp.*"],
    "rate": ["spikeguide.methods.rate.*"],
    "kd": ["spikeguide.methods.kd.*"],
    "method_base": ["spikeguide.methods.base.*"],
    "lif": ["spikeguide.neurons.lif.*"],
    "neuron_base": ["spikeguide.neurons.base.*"],
    "recorder": ["spikeguide.ratepass.recorder.*"],
    "autograd": ["spikeguide.ratepass.autograd.*"],
    "trainer": [f"spikeguide.training.trainer.xǁTrainerǁ{name}__mutmut_*"
                for name in TRAINER_STATE],
}
ORDER = list(SHARDS)  # the most important first


def shard_of(mutant: str) -> str | None:
    return next((shard for shard, patterns in SHARDS.items()
                 if any(fnmatch.fnmatchcase(mutant, p) for p in patterns)), None)


def run(shards: list[str], jobs: int) -> None:
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {**os.environ, "PYTHONPATH": "", "OMP_NUM_THREADS": "1"}
    # a cache of its own: the C++ neuron kernel is built from mutants/'s copy of its source, and
    # a cache shared with runs from src/ would rebuild it at every switch
    env.setdefault("TORCH_EXTENSIONS_DIR", "/tmp/torch_ext_mutmut")
    for shard in shards:
        print(f"== {shard}", flush=True)
        subprocess.run([str(mutmut), "run", "--max-children", str(jobs), *SHARDS[shard]],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def statuses() -> dict[str, str]:
    """mutmut's verdict on every mutant it generated, by name."""
    os.chdir(ROOT)
    from mutmut.__main__ import SourceFileMutationData, status_by_exit_code, walk_mutatable_files

    found = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        found.update({k: status_by_exit_code[v] for k, v in data.exit_code_by_key.items()})
    return found


def report() -> None:
    from mutmut.__main__ import get_diff_for_mutant

    found = statuses()
    counts = {shard: Counter() for shard in ORDER}
    survivors = []
    for mutant, status in sorted(found.items()):
        shard = shard_of(mutant)
        if shard is not None:
            counts[shard][status] += 1
            if status == "survived":
                survivors.append(mutant)
    print(f"{'shard':<12} {'mutants':>7} {'killed':>7} {'survived':>8} {'timeout':>7} "
          f"{'not run':>7} {'other':>5}")
    for shard, c in counts.items():
        total = sum(c.values())
        other = total - sum(c[s] for s in ("killed", "survived", "timeout", "not checked"))
        print(f"{shard:<12} {total:>7} {c['killed']:>7} {c['survived']:>8} {c['timeout']:>7} "
              f"{c['not checked']:>7} {other:>5}")
    for mutant in survivors:
        print(f"\n# {mutant}: survived\n{get_diff_for_mutant(mutant)}")


def check(shard: str, tests: list[str], only: list[str]) -> None:
    """Run ``tests`` (of the working tree) against each of the shard's survivors and mutants no
    selected test reached (those matching a pattern of ``only``, when given), one at a time:
    mutmut's own mutated sources, copied aside so that a run in progress does not change them,
    with the mutant switched on by ``MUTANT_UNDER_TEST``."""
    found = statuses()
    names = [m for m, status in sorted(found.items())
             if shard_of(m) == shard and status in ("survived", "no tests")
             and (not only or any(fnmatch.fnmatchcase(m, p) for p in only))]
    with tempfile.TemporaryDirectory() as snapshot:
        shutil.copytree(ROOT / "mutants" / "src", snapshot, dirs_exist_ok=True)
        env = {**os.environ, "PYTHONPATH": snapshot, "OMP_NUM_THREADS": "1"}
        for name in ["", *names]:  # "": no mutant, the tests must pass
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                cwd=ROOT, env={**env, "MUTANT_UNDER_TEST": name}, capture_output=True)
            verdict = ("killed" if result.returncode else "survived") if name else (
                "fails" if result.returncode else "passes")
            print(f"{name or 'no mutant'}: {verdict}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("shards", nargs="*", metavar="SHARD",
                            help=f"default: all, in this order: {' '.join(ORDER)}")
    run_parser.add_argument("--jobs", type=int, default=2, help="parallel mutants (default 2)")
    sub.add_parser("report")
    check_parser = sub.add_parser("check")
    check_parser.add_argument("shard", choices=ORDER)
    check_parser.add_argument("tests", nargs="+", metavar="TEST")
    check_parser.add_argument("--only", nargs="+", default=[], metavar="PATTERN",
                              help="check only the mutants matching these patterns (fnmatch)")
    args = parser.parse_args()
    unknown = [s for s in getattr(args, "shards", []) if s not in SHARDS]
    if unknown:
        parser.error(f"unknown shard {unknown[0]!r}: one of {', '.join(ORDER)}")
    if args.command == "run":
        run(args.shards or ORDER, args.jobs)
    elif args.command == "check":
        check(args.shard, args.tests, args.only)
    else:
        report()


if __name__ == "__main__":
    main()
