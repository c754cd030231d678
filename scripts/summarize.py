"""A table and plots of every run under a folder, from their configs, TensorBoard events and result.json:

    python scripts/summarize.py outputs/multirun/<sweep>     # summary.md, summary.csv, curves.png, by_parameter.png
    python scripts/summarize.py outputs/multirun/<sweep> --x unroll --lines cell   # by_parameter.png's axes
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
    args = parser.parse_args()
    from rnnexp.summary import summarize

    try:
        path = summarize(args.folder, args.x, args.lines)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(path.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
