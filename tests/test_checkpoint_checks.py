"""rnnexp/checkpoint.py's checks as functions, in milliseconds: which file a ckpt_path names, what a
load refuses (a missing file, a pickle that would run code, a file without a training state), and
the lines that say why a checkpoint does not fit this run or why a resume is refused."""

import os
from pathlib import Path

import pytest
import torch

from rnnexp.checkpoint import check_fits, check_same_settings, find_checkpoint, flatten, load_checkpoint
from rnnexp.errors import CheckpointError

RESUME_HINT = ("; give the checkpoint's values, or start a new run from its weights with init_from={path} "
               "instead of ckpt_path")


class Payload:
    """Unpickling this runs a shell command: what a tampered checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_ckpt_path_last_without_any_run_names_where_it_looked(tmp_path):
    with pytest.raises(CheckpointError) as refused:
        find_checkpoint("last", runs_root=tmp_path / "outputs")
    assert str(refused.value) == f"ckpt_path=last: no run under {tmp_path / 'outputs'}/ has a checkpoints/last.ckpt yet"


def test_a_ckpt_path_is_a_file_or_a_run_folder(tmp_path):
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    assert find_checkpoint(tmp_path / "run") == last
    assert find_checkpoint(str(last)) == last
    with pytest.raises(CheckpointError) as refused:
        find_checkpoint(tmp_path / "missing.ckpt")
    assert str(refused.value) == f"checkpoint {tmp_path / 'missing.ckpt'} does not exist"
    with pytest.raises(CheckpointError) as refused:
        find_checkpoint(tmp_path)  # a folder without checkpoints/last.ckpt
    assert str(refused.value) == f"checkpoint {tmp_path / 'checkpoints' / 'last.ckpt'} does not exist"


def test_a_missing_checkpoint_file_is_named(tmp_path):
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "missing.ckpt")
    assert str(refused.value) == f"checkpoint {tmp_path / 'missing.ckpt'} does not exist"


def test_a_checkpoint_that_would_run_code_is_refused_naming_the_call_and_nothing_runs(tmp_path):
    path, marker = tmp_path / "tampered.ckpt", tmp_path / "pwned"
    torch.save({"state_dict": {}, "hook": Payload(marker)}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert str(refused.value) == (f"checkpoint {path} holds objects that would run code when loaded (posix.system); "
                                  "refused (only tensors and plain data are accepted)")
    assert not marker.exists()


def test_a_checkpoint_without_a_training_state_is_refused_unless_only_weights_are_asked_for(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"weights": torch.ones(2)}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)  # a training state is what a checkpoint is loaded for, by default
    assert str(refused.value) == f"{path} is not an rnnexp checkpoint (no state_dict)"
    assert torch.equal(load_checkpoint(path, training_state=False)["weights"], torch.ones(2))


def test_a_checkpoint_is_loaded_where_it_is_asked_for(tmp_path):
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path)["state_dict"]["w"].device.type == "cpu"
    assert load_checkpoint(path, map_location="meta")["state_dict"]["w"].device.type == "meta"


def saved(config: dict, vocab, state: dict) -> dict:
    return {"hyper_parameters": {"config": config, "vocab": vocab}, "state_dict": state}


MODEL = {"cell": {"name": "lstm", "hidden_size": 4, "activation": None},
         "arch": {"name": "arch1", "embedding_dim": 3, "combine": "sum", "num_layers": 1, "residual": False}}


def test_a_checkpoint_that_fits_passes():
    checkpoint = saved(MODEL, ["a", "b"], {"w": torch.zeros(4, 3)})
    check_fits(checkpoint, Path("x.ckpt"), MODEL, ["a", "b"], {"w": torch.zeros(4, 3)})


def test_another_vocabulary_is_refused_with_its_size_and_the_first_new_symbols():
    checkpoint = saved(MODEL, ["a", "b"], {"w": torch.zeros(4, 3)})
    vocab = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    with pytest.raises(CheckpointError) as refused:
        check_fits(checkpoint, Path("x.ckpt"), MODEL, vocab, {"w": torch.zeros(4, 3)})
    assert str(refused.value) == (
        "checkpoint x.ckpt was trained on another vocabulary (2 symbols; this data has 9, 7 of them new, "
        "e.g. ['c', 'd', 'e', 'f', 'g']): resume with the data it was trained on")
    without = saved(MODEL, None, {"w": torch.zeros(4, 3)})  # a checkpoint whose vocabulary is empty
    with pytest.raises(CheckpointError) as refused:
        check_fits(without, Path("x.ckpt"), MODEL, ["a"], {"w": torch.zeros(4, 3)})
    assert "(0 symbols; this data has 1, 1 of them new, e.g. ['a'])" in str(refused.value)


def test_another_model_is_refused_naming_each_setting_that_differs():
    config = {"cell": {**MODEL["cell"], "hidden_size": 8}, "arch": {**MODEL["arch"], "embedding_dim": 5}}
    checkpoint = saved(MODEL, ["a"], {"w": torch.zeros(4, 3)})
    with pytest.raises(CheckpointError) as refused:
        check_fits(checkpoint, Path("x.ckpt"), config, ["a"], {"w": torch.zeros(8, 5)})
    assert str(refused.value) == ("checkpoint x.ckpt has another model: cell.hidden_size=4 (this run: 8), "
                                  "arch.embedding_dim=3 (this run: 5)")
    no_arch = saved({"cell": MODEL["cell"]}, ["a"], {"w": torch.zeros(4, 3)})  # a group the checkpoint lacks
    with pytest.raises(CheckpointError) as refused:
        check_fits(no_arch, Path("x.ckpt"), MODEL, ["a"], {"w": torch.zeros(4, 4)})
    assert str(refused.value) == ("checkpoint x.ckpt has another model: arch.name=None (this run: arch1), "
                                  "arch.embedding_dim=None (this run: 3), arch.combine=None (this run: sum), "
                                  "arch.num_layers=None (this run: 1), arch.residual=None (this run: False)")


def test_another_shape_with_the_same_settings_names_the_first_parameter_that_differs():
    checkpoint = saved(MODEL, ["a"], {"v": torch.zeros(2), "w": torch.zeros(4, 3)})
    with pytest.raises(CheckpointError) as refused:
        check_fits(checkpoint, Path("x.ckpt"), MODEL, ["a"], {"v": torch.zeros(2), "w": torch.zeros(4, 4)})
    assert str(refused.value) == "checkpoint x.ckpt has another model: parameter w is (4, 3) there (this run: (4, 4))"
    with pytest.raises(CheckpointError) as refused:
        check_fits(checkpoint, Path("x.ckpt"), MODEL, ["a"], {"u": torch.zeros(1), "v": torch.zeros(2),
                                                              "w": torch.zeros(4, 3)})
    assert str(refused.value) == "checkpoint x.ckpt has another model: parameter u is None there (this run: (1,))"
    with pytest.raises(CheckpointError) as refused:  # a parameter this run does not have
        check_fits(checkpoint, Path("x.ckpt"), MODEL, ["a"], {"w": torch.zeros(4, 3)})
    assert str(refused.value) == "checkpoint x.ckpt has another model: parameter v is (2,) there (this run: None)"


@pytest.mark.parametrize("hyper_parameters", [None, {"config": {}}, {"vocab": []}],
                         ids=["none", "no-vocab", "no-config"])
def test_a_checkpoint_without_rnnexp_settings_is_refused(hyper_parameters):
    checkpoint = {"hyper_parameters": hyper_parameters, "state_dict": {}}
    expected = "x.ckpt is not an rnnexp checkpoint (it has no rnnexp config and vocabulary)"
    with pytest.raises(CheckpointError) as refused:
        check_fits(checkpoint, Path("x.ckpt"), MODEL, [], {})
    assert str(refused.value) == expected
    with pytest.raises(CheckpointError) as refused:
        check_same_settings(checkpoint, Path("x.ckpt"), {"run_dir": "r"})
    assert str(refused.value) == expected


def test_a_setting_absent_on_one_side_differs_from_one_set_to_null():
    checkpoint = saved({"run_dir": "r", "x": None}, [], {})
    with pytest.raises(CheckpointError) as refused:
        check_same_settings(checkpoint, Path("x.ckpt"), {"run_dir": "r"})
    assert str(refused.value) == ("resuming x.ckpt continues its run with its own settings, but this run differs: "
                                  "x=(absent) (checkpoint: None)" + RESUME_HINT.format(path="x.ckpt"))
    with pytest.raises(CheckpointError) as refused:
        check_same_settings(saved({"run_dir": "r"}, [], {}), Path("x.ckpt"), {"run_dir": "r", "x": None})
    assert "this run differs: x=None (checkpoint: (absent));" in str(refused.value)


def test_flatten_keeps_every_key_as_it_is_named():
    assert flatten({"cell": {"X": 1, "hidden_size": 2}, "empty": {}, "top": None}) == {
        "cell.X": 1, "cell.hidden_size": 2, "empty": {}, "top": None}


def test_a_checkpoint_of_before_a_setting_compares_as_its_value_that_means_off():
    old = saved({"run_dir": "r", "arch": {"name": "arch1"}}, [], {})  # written before arch.zoneout existed
    check_same_settings(old, Path("x.ckpt"), {"run_dir": "r", "arch": {"name": "arch1", "zoneout": 0.0}})
    with pytest.raises(CheckpointError, match=r"arch\.zoneout=0\.5 \(checkpoint: 0\.0\)"):
        check_same_settings(old, Path("x.ckpt"), {"run_dir": "r", "arch": {"name": "arch1", "zoneout": 0.5}})


def test_a_damaged_checkpoint_is_named_with_what_is_wrong(tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x02}q\x00garbage that is no pickle")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(garbage)
    assert str(refused.value) == f"checkpoint {garbage} is corrupt or truncated (not a torch checkpoint)"
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.ones(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    try:
        torch.load(truncated, weights_only=True)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[0]
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(truncated)
    assert str(refused.value) == f"checkpoint {truncated} is corrupt or truncated ({reason})"


def test_a_save_writes_beside_its_target_and_renames_making_missing_folders(tmp_path, monkeypatch):
    from rnnexp.checkpoint import atomic_save

    path = tmp_path / "run" / "checkpoints" / "last.ckpt"  # neither folder exists yet
    atomic_save({"step": 1}, path)
    assert torch.load(path)["step"] == 1 and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]

    def dies(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(OSError):
        atomic_save({"step": 2}, path)
    assert (path.parent / "last.ckpt.tmp").read_bytes() == b"half a checkpoint"  # the partial write, beside it
    monkeypatch.undo()
    assert torch.load(path)["step"] == 1  # the last complete save is untouched


def test_only_the_empty_unused_folders_made_here_are_removed(tmp_path, monkeypatch):
    from rnnexp import checkpoint

    monkeypatch.setattr(checkpoint, "_made_here", [])
    used, empty, written, also_empty = (Path(checkpoint.new_folder(str(tmp_path / name)))
                                        for name in ("used", "empty", "written", "also_empty"))
    (written / "events").write_text("x")
    checkpoint.remove_unused_folders([str(used / "0_job")])  # a job's folder below `used`
    assert sorted(p.name for p in tmp_path.iterdir()) == ["used", "written"]
    assert checkpoint._made_here == [used, written]


@pytest.mark.parametrize("hook,mode,kept", [("on_multirun_start", "MULTIRUN", "sweep"),
                                            ("on_job_start", "MULTIRUN", "sweep"), ("on_job_start", "RUN", "run"),
                                            ("on_multirun_end", "MULTIRUN", "sweep")])
def test_the_hydra_callback_keeps_the_folder_hydra_uses_and_removes_the_other(tmp_path, monkeypatch, hook, mode,
                                                                               kept):
    from types import SimpleNamespace

    from hydra.types import RunMode

    from rnnexp import checkpoint

    monkeypatch.setattr(checkpoint, "_made_here", [])
    run, sweep = (checkpoint.new_folder(str(tmp_path / name)) for name in ("run", "sweep"))
    config = SimpleNamespace(hydra=SimpleNamespace(mode=RunMode[mode], run=SimpleNamespace(dir=run),
                                                   sweep=SimpleNamespace(dir=sweep)))
    getattr(checkpoint.RemoveUnusedFolders(), hook)(config)
    assert [p.name for p in tmp_path.iterdir()] == [kept]
