"""What a user sees in TensorBoard, opened in a real browser (tests/browser.py): a sweep over the cell is
told apart at a glance, without ticking boxes."""

import pytest

from tests.browser import CHROMIUM, browser_page, serving, visible_at
from tests.helpers import make_text, tiny_run_config

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The runs of `-m cell=rnn,lstm`, tiny and short, trained in this process into the folders Hydra and
    rnnexp name for them (tests/test_diagnostics.py checks the names themselves)."""
    from rnnexp.run_names import run_name, sweep_name
    from rnnexp.train import train

    outputs = tmp_path_factory.mktemp("dashboards") / "outputs"
    text = outputs.parent / "tiny.txt"
    text.write_text(make_text())
    folder = outputs / "multirun" / f"{sweep_name(['cell=rnn,lstm'])}_2026-12-02_10-00-00"
    for job, cell in enumerate(("rnn", "lstm")):
        train(tiny_run_config(text, folder / f"{job}_{run_name(f'cell={cell}', cell)}", f"cell={cell}",
                              "trainer.max_steps=6", "sample.length=0", "sample.val_length=0"))
    return outputs


def test_hparams_shows_the_swept_setting_and_the_metrics_in_its_default_columns(sweep):
    (folder,) = (sweep / "multirun").iterdir()
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
