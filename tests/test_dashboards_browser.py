"""What a user sees in TensorBoard, opened in a real browser (rnnexp/browser.py): a sweep over the cell is
told apart at a glance, without ticking boxes."""

import time

import pytest

from rnnexp.browser import CHROMIUM, browser_page, serving, visible_at
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
                              "trainer.max_steps=6", "sample.length=0", "sample.val_length=0",
                              "diagnostics.every_n_steps=2"))
    return outputs


def test_hparams_shows_the_swept_setting_and_the_metrics_in_its_default_columns(sweep):
    (folder,) = (sweep / "multirun").iterdir()
    assert sorted(p.name.split("_")[1] for p in folder.glob("[0-9]_*")) == ["lstm", "rnn"]
    with serving("tensorboard", "--logdir", str(folder)) as url, browser_page() as page:  # as the sweep prints
        page.goto(f"{url}/#hparams")
        page.get_by_text("val_hp/best_bpc", exact=True).first.wait_for(timeout=60_000)
        (header_x, header_y), = visible_at(page, "Trial ID")
        in_table = {text: [(x, y) for x, y in visible_at(page, text) if x > header_x]
                    for text in ("cell/name", "val_hp/best_bpc", "val_hp/bpc", "arch/combine", "rnn", "lstm")}
        header = {text for text, places in in_table.items() if any(y == header_y for _, y in places)}
        assert {"cell/name", "val_hp/best_bpc", "val_hp/bpc"} <= header, in_table  # without ticking a box
        first_column = {text: min(x for x, y in in_table[text] if y == header_y) for text in header}
        assert min(first_column, key=first_column.get) == "cell/name"  # the setting that differs comes first
        for cell in ("rnn", "lstm"):
            assert any(y > header_y for _, y in in_table[cell]), in_table  # each run's row says its cell
        trial_ids = page.get_by_text("/hparams", exact=False)
        names = [trial_ids.nth(i).inner_text() for i in range(trial_ids.count()) if trial_ids.nth(i).is_visible()]
        assert sorted(name.split("/")[-2].split("_")[1] for name in names) == ["lstm", "rnn"], names
        for trial_id in names:  # shown whole, not cut by the column's width
            assert page.get_by_text(trial_id, exact=True).first.evaluate("e => e.scrollWidth <= e.clientWidth")


def test_time_series_opens_on_training_and_validation_and_shows_the_gradient_flow_at_its_own_size(sweep):
    (folder,) = (sweep / "multirun").iterdir()
    with serving("tensorboard", "--logdir", str(folder)) as url, browser_page() as page:
        page.goto(f"{url}/#timeseries")
        page.get_by_text("train/loss", exact=True).first.wait_for(timeout=60_000)
        groups = page.evaluate("""() => [...document.querySelectorAll('.card-group')].map(group => [
            group.querySelector('.group-toolbar').innerText.replace(/\\d+ cards?$/, '').trim(),
            group.querySelector('metrics-card-grid').innerText.length > 0])""")
        assert [name for name, expanded in groups if expanded] == ["train", "val"], groups  # opened by themselves
        assert [name for name, _ in groups][:2] == ["train", "val"], groups
        for run in ("0_rnn", "1_lstm"):  # the run list names each run by its cell
            page.get_by_text(run, exact=True).first.wait_for(timeout=10_000)
        page.locator("input[placeholder='Filter tags (regex)']").fill("gradient_flow/rnn.l0$")
        page.wait_for_function("document.querySelectorAll('image-card img').length == 2", timeout=60_000)
        page.wait_for_function("[...document.querySelectorAll('image-card img')].every(i => i.complete)")
        sizes = page.evaluate("""() => [...document.querySelectorAll('image-card img')].map(image => [
            image.naturalWidth, image.naturalHeight, image.getBoundingClientRect().width])""")
        for width, height, shown in sizes:  # a figure with axes, shown at its own size: its text at 100%
            assert width >= 400 and height >= 200 and shown == pytest.approx(width, abs=2), sizes


def test_custom_scalars_draws_each_chart_from_the_runs(sweep):
    (folder,) = (sweep / "multirun").iterdir()
    with serving("tensorboard", "--logdir", str(folder)) as url, browser_page() as page:
        page.goto(f"{url}/#custom_scalars")
        page.get_by_text("loss: training vs validation (nats per token)", exact=True).wait_for(timeout=60_000)
        for chart in ("loss: training vs validation (nats per token)", "validation bpc, and the best so far",
                      "learning rate, log10 (optimizers' rates side by side)", "gradient norm per parameter: head"):
            card = page.locator("tf-custom-scalar-multi-line-chart-card", has_text=chart)
            count = card.get_by_text("Matches (", exact=False)
            count.wait_for(timeout=30_000)
            deadline = time.monotonic() + 60  # the card shows "Matches (0)" until TensorBoard has read the runs
            while (matches := int(count.inner_text().split("(")[1].rstrip(")"))) < 2 and time.monotonic() < deadline:
                page.wait_for_timeout(500)
            assert matches >= 2, (chart, matches)  # a line from each run
