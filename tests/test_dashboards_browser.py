"""What a user sees in TensorBoard, opened in a real browser (tests/browser.py): a sweep over the cell is
told apart at a glance, without ticking boxes."""

import subprocess
import sys

import pytest

from tests.browser import CHROMIUM, browser_page, serving, visible_at
from tests.helpers import REPO, TINY_MODEL, make_text

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """`-m cell=rnn,lstm` as a user runs it (its folders named by Hydra and rnnexp), tiny and short."""
    cwd = tmp_path_factory.mktemp("dashboards")
    (cwd / "tiny.txt").write_text(make_text())
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "-m", "cell=rnn,lstm", "data=text_file",
                             f"data.path={cwd / 'tiny.txt'}", *TINY_MODEL, "trainer.max_steps=6",
                             "diagnostics.every_n_steps=2"],
                            cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "outputs"


def test_hparams_shows_the_swept_setting_and_the_metrics_in_its_default_columns(sweep):
    (folder,) = (sweep / "multirun").iterdir()
    assert folder.name.startswith("sweep_cell_")  # what it sweeps first, then the date
    assert sorted(p.name.split("_")[1] for p in folder.glob("[0-9]_*")) == ["lstm", "rnn"]
    with serving("tensorboard", "--logdir", str(sweep)) as url, browser_page() as page:
        page.goto(f"{url}/#hparams")
        page.get_by_text("hp/best_val_bpc", exact=True).first.wait_for(timeout=60_000)
        (header_x, header_y), = visible_at(page, "Trial ID")
        in_table = {text: [(x, y) for x, y in visible_at(page, text) if x > header_x]
                    for text in ("cell/name", "hp/best_val_bpc", "hp/val_bpc", "arch/combine", "rnn", "lstm")}
        header = {text for text, places in in_table.items() if any(y == header_y for _, y in places)}
        assert {"cell/name", "hp/best_val_bpc", "hp/val_bpc"} <= header, in_table  # without ticking a box
        first_column = {text: min(x for x, y in in_table[text] if y == header_y) for text in header}
        assert min(first_column, key=first_column.get) == "cell/name"  # the setting that differs comes first
        for cell in ("rnn", "lstm"):
            assert any(y > header_y for _, y in in_table[cell]), in_table  # each run's row says its cell
        trial_ids = page.get_by_text("/hparams", exact=False)
        names = [trial_ids.nth(i).inner_text() for i in range(trial_ids.count()) if trial_ids.nth(i).is_visible()]
        assert sorted(name.split("/")[-2].split("_")[1] for name in names) == ["lstm", "rnn"], names
