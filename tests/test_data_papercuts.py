"""Small things that got in the way (issue 24): a WikiText-2 folder without train.txt, what a refused
first run leaves behind, and ignore rules that match tracked files. Offline: no network is used."""

import subprocess
import sys
import urllib.error

import pytest

from rnnexp import download
from rnnexp.data import load_corpus
from rnnexp.errors import DataError
from tests.helpers import REPO
from tests.test_data import WORD, data_config, serve, zipped

SPLITS = {"train": "a b c\nd e\n" * 20, "valid": "a b\nc\n" * 10, "test": "b c d\n" * 10}


@pytest.fixture
def offline(monkeypatch):
    """Every download fails as it does without a network; the attempts are counted."""
    attempts = []

    def no_network(request, *args, **kwargs):
        attempts.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    return attempts


def test_wikitext2_without_train_txt_names_the_missing_file_and_the_stand_in(tmp_path, offline):
    folder = tmp_path / "data" / "wikitext-2"  # as ../shared/data has it: valid.txt and test.txt only
    folder.mkdir(parents=True)
    for split in ("valid", "test"):
        (folder / f"{split}.txt").write_text(SPLITS[split])
    with pytest.raises(DataError) as error:
        load_corpus(data_config("wikitext2"), WORD, tmp_path / "data", tmp_path / "cache")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"data folder {folder} has valid.txt and test.txt but no train.txt, ")
    assert "(which has it)" in message  # one file missing; two are "them" (the next test)
    assert message.endswith("put train.txt there, or use a file you have: data.files.train=test.txt")
    assert download.REMOTE_FILES["wikitext2"].url in message and "Name or service not known" in message
    assert offline == [download.REMOTE_FILES["wikitext2"].url]  # it tried the download first
    assert sorted(p.name for p in folder.iterdir()) == ["test.txt", "valid.txt"]  # nothing added
    # The hint works: the same folder trains on test.txt, offline.
    corpus = load_corpus({**data_config("wikitext2"), "files": {"train": "test.txt", "valid": "valid.txt",
                                                                "test": "test.txt"}},
                         WORD, tmp_path / "data", tmp_path / "cache")
    assert len(corpus.train) == len(corpus.test) > 0


def test_a_folder_missing_two_files_names_both_with_a_stand_in_each(tmp_path, offline):
    folder = tmp_path / "data" / "wikitext-2"
    folder.mkdir(parents=True)
    (folder / "valid.txt").write_text(SPLITS["valid"])
    with pytest.raises(DataError, match=r"has valid.txt but no train.txt or test.txt, .*\(which has them\).* "
                                        r"data.files.train=valid.txt data.files.test=valid.txt$"):
        load_corpus(data_config("wikitext2"), WORD, tmp_path / "data", tmp_path / "cache")


def test_an_empty_data_dir_offline_still_asks_for_the_zip(tmp_path, offline):
    with pytest.raises(DataError) as error:
        load_corpus(data_config("wikitext2"), WORD, tmp_path / "data", tmp_path / "cache")
    remote = download.REMOTE_FILES["wikitext2"]
    assert str(error.value).startswith(f"could not download {remote.url} (Name or service not known)")
    assert str(tmp_path / "data" / remote.filename) in str(error.value)


def test_missing_files_are_still_downloaded_where_the_network_works(tmp_path, monkeypatch):
    """Nothing there, or some files there: the zip is downloaded (a file:// URL here) and the
    missing files extracted from it."""
    members = {f"wikitext-2/wiki.{split}.tokens": text.encode() for split, text in SPLITS.items()}
    serve(monkeypatch, tmp_path, "wikitext2", zipped(members), "wikitext-2-v1.zip")
    for data_dir, present in ((tmp_path / "empty", ()), (tmp_path / "partial", ("valid", "test")),
                              (tmp_path / "train_only", ("train",))):  # a present file before missing ones
        folder = data_dir / "wikitext-2"
        folder.mkdir(parents=True)
        for split in present:
            (folder / f"{split}.txt").write_text(SPLITS[split])
        load_corpus(data_config("wikitext2"), WORD, data_dir, tmp_path / "cache")
        assert {split: (folder / f"{split}.txt").read_text() for split in SPLITS} == SPLITS


def run_in(cwd, *args: str) -> subprocess.CompletedProcess:
    """train.py as a user runs it, from the folder `cwd` (where its outputs/ goes)."""
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_a_refused_first_run_leaves_no_empty_outputs_folder(tmp_path):
    result = run_in(tmp_path, "lr=-1", "data_dir=/nonexistent")
    assert result.returncode == 2 and result.stderr.strip() == "error: lr must be a positive number, got -1"
    assert list(tmp_path.iterdir()) == []  # no outputs/runs/, no outputs/


def test_a_refused_run_keeps_the_folders_that_were_there_before_it(tmp_path):
    (tmp_path / "outputs" / "runs").mkdir(parents=True)  # empty, but not this run's to remove
    assert run_in(tmp_path, "lr=-1").returncode == 2
    assert list((tmp_path / "outputs").iterdir()) == [tmp_path / "outputs" / "runs"]
    assert list((tmp_path / "outputs" / "runs").iterdir()) == []
    # A run folder of one's own: the parents it made go, the ones that were there stay.
    (tmp_path / "mine").mkdir()
    assert run_in(tmp_path, "lr=-1", "hydra.run.dir=mine/new/deeper/run").returncode == 2
    assert (tmp_path / "mine").is_dir() and list((tmp_path / "mine").iterdir()) == []


def test_no_tracked_file_is_ignored_by_gitignore():
    """`git check-ignore` passes tracked files over; --no-index checks them against the rules too."""
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin", "-v"], cwd=REPO, input=listed.stdout,
                             capture_output=True, text=True)
    assert ignored.stdout == "", f"tracked files matched by an ignore rule:\n{ignored.stdout}"
    assert "conf/train.yaml" in listed.stdout.splitlines()
