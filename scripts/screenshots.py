"""Screenshots of TensorBoard's tabs, as a user sees them, for the docs (a developer's tool):

    python train.py -m cell=rnn,lstm unroll=100 trainer.max_steps=300 diagnostics.every_n_steps=25
    python scripts/screenshots.py outputs/multirun/sweep_cell_unroll_<date>_<time> docs/

It starts TensorBoard on the folder, opens it in Debian's headless chromium (`apt-get install chromium`,
driven by playwright, the dev extra; rnnexp/browser.py) at 1600 x 1000 pixels, and writes
`dashboard_<tab>.png` for Time Series, its `vitals` group filtered to the gradient flow, Custom
Scalars and HParams.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (file name, TensorBoard's page, a tag filter for Time Series, a text to wait for)
SHOTS = [
    ("time_series", "timeseries", "", "train/loss"),
    ("gradient_flow", "timeseries", "gradient_flow", "vitals/gradient_flow"),
    ("custom_scalars", "custom_scalars", "", "loss: training vs validation (nats per token)"),
    ("hparams", "hparams", "", "Trial ID"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of TensorBoard's tabs for the docs.")
    parser.add_argument("logdir", type=Path, help="the runs to show (a sweep's folder)")
    parser.add_argument("out", type=Path, help="where the PNG files go")
    args = parser.parse_args()

    from rnnexp.browser import CHROMIUM, browser_page, serving

    if CHROMIUM is None:
        sys.exit("error: needs Debian's chromium: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    with serving("tensorboard", "--logdir", str(args.logdir)) as url, browser_page() as page:
        for name, tab, tag_filter, wait_for in SHOTS:
            page.goto(f"{url}/#{tab}")
            if tag_filter:
                page.locator("input[placeholder='Filter tags (regex)']").fill(tag_filter)
                page.keyboard.press("Escape")  # close the tag suggestions over the cards
            page.get_by_text(wait_for, exact=False).first.wait_for(timeout=60_000)
            page.wait_for_timeout(4_000)  # charts draw after their data arrives
            path = args.out / f"dashboard_{name}.png"
            page.screenshot(path=str(path))
            print(path)


if __name__ == "__main__":
    main()
