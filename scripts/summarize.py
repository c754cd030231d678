"""A table and plots of every run under a folder, from their configs, TensorBoard events and result.json:

    python scripts/summarize.py outputs/multirun/<sweep>     # summary.md, summary.csv, curves.png, by_parameter.png
    python scripts/summarize.py outputs/multirun/<sweep> --x unroll --lines cell   # by_parameter.png's axes
    python scripts/summarize.py outputs/multirun/<sweep> --compare unroll=20,80    # 80 vs 20, paired by seed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a sweep folder, or any folder holding runs (outputs/)")
    parser.add_argument("--x", help="by_parameter.png's x axis: a swept setting (default: the first)")
    parser.add_argument("--lines", help="one line per value of this swept setting (default: the second)")
    parser.add_argument("--compare", metavar="KEY=A,B",
                        help="the best value at KEY=B minus at KEY=A, paired by seed, with its 95%% interval, for "
                             "each combination of the other swept settings")
    args = parser.parse_args()
    if args.compare is not None:
        key, _, values = args.compare.partition("=")
        if len(values.split(",")) != 2 or not key:
            print("error: --compare takes KEY=A,B, e.g. unroll=20,80", file=sys.stderr)
            sys.exit(2)
    from rnnexp.summary import compare, find_runs, summarize

    try:
        path = summarize(args.folder, args.x, args.lines)
        print(path.read_text(encoding="utf-8"))
        if args.compare is not None:
            a, b = values.split(",")
            for comparison in compare(find_runs(args.folder), key, a, b):
                print(comparison.verdict(key, a, b))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
