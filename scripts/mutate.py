"""Mutation testing of rnnexp's core modules with mutmut (`make mutate`): one module at a time, each
against the fast tests that cover it, as pyproject.toml's [tool.mutmut.modules] lists them; then a
table of each module's score (mutants killed / mutants made).

    python scripts/mutate.py                                  # every module listed, then the scores
    python scripts/mutate.py rnnexp/summary.py --budget 900   # one module, stopped after 15 minutes
    python scripts/mutate.py --scores                         # the scores of the runs so far, no new run
    python scripts/mutate.py rnnexp/summary.py --tests tests/test_cli.py --dir /tmp/before   # other tests

Each module runs in a copy of the working tree (tracked and untracked files, not ignored ones) under
--dir, never in the checkout: mutmut writes its mutants/ there, and edits made meanwhile do not mix
into a run. Within a module mutmut runs, for each mutant, only the listed tests that execute the
mutated function, fastest first, and stops at the first failure. A run stopped by its budget keeps
the verdicts it reached; `--keep` goes on from them instead of starting the module afresh, and
`--recheck` runs only the mutants that survived (or met no test) again, with the tests as they are
now: after writing tests that should kill them. To read the survivors: `cd DIR/<module> && mutmut
results`, then `mutmut show NAME` for a mutant's diff. `--mutants` runs only the named mutants (mutmut's
names, `*` globs allowed) in a fresh copy: the survivors a document lists, checked again on a machine
that kept no earlier run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "rnnexp-mutate"
# mutmut's exit codes of a mutant's test run (mutmut/stats.py), in the groups the table counts.
KILLED = {1: "killed", 3: "killed", 36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          37: "killed", -11: "killed", -9: "killed"}  # a crash or a time-out of the tests is a mutant caught
NO_TESTS = {5, 33}


def read_config() -> dict:
    import tomllib  # Python >= 3.11: the environment mutmut runs in

    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["mutmut"]


def module_dir(root: Path, module: str) -> Path:
    return root / module.removesuffix(".py").replace("/", ".")


def copy_tree(target: Path) -> None:
    """The working tree as git sees it (tracked and untracked files, not ignored ones) into `target`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def toml_value(value) -> str:
    return json.dumps(value)  # strings, numbers, booleans and lists of them are written alike in TOML


def configure(copy: Path, settings: dict, module: str, tests: list[str]) -> None:
    """The copy's pyproject.toml with a [tool.mutmut] for this module alone: its file, its tests."""
    path = copy / "pyproject.toml"
    kept, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            inside = line.startswith("[tool.mutmut")
        if not inside:
            kept.append(line)
    own = {k: v for k, v in settings.items() if k != "modules"}
    own["only_mutate"] = [module]
    own["pytest_add_cli_args_test_selection"] = tests
    section = ["[tool.mutmut]"] + [f"{key} = {toml_value(value)}" for key, value in own.items()]
    path.write_text("\n".join(kept + [""] + section) + "\n", encoding="utf-8")


def run_module(root: Path, module: str, tests: list[str], settings: dict, budget: float, jobs: int,
               keep: bool, recheck: bool, mutants: list[str]) -> None:
    copy = module_dir(root, module)
    again = survivors(copy, module) if recheck else mutants
    if recheck and not again:
        print(f"--- {module}: no survivor to check again in {copy}", flush=True)
        return
    if copy.exists() and not (keep or recheck):
        shutil.rmtree(copy)
    copy.mkdir(parents=True, exist_ok=True)
    copy_tree(copy)
    configure(copy, settings, module, tests)
    mutmut = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    what = f"{len(again)} survivors again" if recheck else f"budget {budget:.0f} s"
    what += f", only {len(mutants)} named mutants" if mutants else ""
    print(f"--- {module}: mutmut in {copy}, tests: {' '.join(tests)}; {what}", flush=True)
    started = time.monotonic()
    with open(copy / "mutmut.log", "a" if recheck else "w", encoding="utf-8") as log:
        process = subprocess.Popen([mutmut, "run", "--max-children", str(jobs), *again], cwd=copy, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)  # mutmut, its fork server and the mutants under test
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            print(f"    stopped by the budget after {time.monotonic() - started:.0f} s", flush=True)
    if process.returncode not in (0, None, -signal.SIGTERM, -signal.SIGKILL):
        print(f"    mutmut exited with {process.returncode}: see {copy / 'mutmut.log'}", flush=True)


def verdicts(copy: Path, module: str) -> dict[str, int | None]:
    """Each mutant's exit code so far (None: not run yet), from mutmut's record (mutants/<module>.meta)."""
    meta = copy / "mutants" / f"{module}.meta"
    return json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"] if meta.is_file() else {}


def survivors(copy: Path, module: str) -> list[str]:
    return [name for name, code in verdicts(copy, module).items()
            if code is not None and code not in KILLED]  # survived, suspicious, or no test ran it


def count(copy: Path, module: str) -> dict[str, int]:
    counts = {"mutants": 0, "killed": 0, "timeout": 0, "survived": 0, "no tests": 0, "not run": 0}
    for code in verdicts(copy, module).values():
        counts["mutants"] += 1
        if code is None:
            counts["not run"] += 1
        elif code in KILLED:
            counts[KILLED[code]] += 1
        elif code in NO_TESTS:
            counts["no tests"] += 1
        else:  # 0, or what mutmut calls suspicious: the tests passed with the mutant in place
            counts["survived"] += 1
    return counts


def scores(root: Path, modules: list[str]) -> None:
    header = ["module", "mutants", "killed", "timeout", "survived", "no tests", "not run", "score"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for module in modules:
        c = count(module_dir(root, module), module)
        judged = c["mutants"] - c["not run"]
        score = f"{100 * (c['killed'] + c['timeout']) / judged:.1f}%" if judged else "-"
        print(f"| {module} | " + " | ".join(str(c[k]) for k in header[1:-1]) + f" | {score} |")
    print("score: killed (or timed out) / mutants judged; 'no tests': no listed test runs the mutated function")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help="files under rnnexp/ (default: all of [tool.mutmut.modules])")
    parser.add_argument("--budget", type=float, default=3600, help="seconds per module before it is stopped")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (each a process)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"where the copies go (default {DEFAULT_DIR})")
    parser.add_argument("--keep", action="store_true", help="go on from a module's earlier verdicts")
    parser.add_argument("--recheck", action="store_true", help="run the survivors of the last run again, with the "
                        "tests as they are now")
    parser.add_argument("--mutants", nargs="+", default=[], help="only these mutants (mutmut's names, * globs "
                        "allowed), in a fresh copy")
    parser.add_argument("--tests", nargs="+", help="these tests instead of the module's listed ones (to compare "
                        "test sets; give another --dir)")
    parser.add_argument("--scores", action="store_true", help="print the scores so far and run nothing")
    args = parser.parse_args()
    settings = read_config()
    listed = settings["modules"]
    modules = args.modules or list(listed)
    unknown = [m for m in modules if m not in listed]
    if unknown:
        parser.error(f"not in [tool.mutmut.modules]: {', '.join(unknown)} (listed: {', '.join(listed)})")
    if args.mutants and len(modules) != 1:
        parser.error("--mutants names the mutants of one module: give that module alone")
    if not args.scores:
        for module in modules:
            run_module(args.dir, module, args.tests or listed[module], settings, args.budget, args.jobs, args.keep,
                       args.recheck, args.mutants)
    scores(args.dir, modules)


if __name__ == "__main__":
    main()
