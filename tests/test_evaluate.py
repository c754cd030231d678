"""scripts/evaluate.py and scripts/sample.py on checkpoints; the test split at the end of training."""

import json
import math
import subprocess
import sys

import pytest
import torch

from rnnexp.checkpoint import load_checkpoint
from rnnexp.train import train
from tests.helpers import REPO, read_scalars, run_script_in_process, tiny_run_config, tiny_seq2seq_config


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    result = run_script_in_process(script, *args)  # the command line itself: tests/test_cli.py
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    text = root / "text.txt"
    from tests.helpers import make_text

    text.write_text(make_text())
    train(tiny_run_config(text, root / "run", "trainer.max_steps=30", "lr=0.01", "data.test_fraction=0.1"))
    return root / "run", text


def test_text_score_is_the_sum_of_each_tokens_log_probability(trained):
    run_dir, _ = trained
    sentence = "the lazy dog runs home"
    result = json.loads(run_script("evaluate.py", str(run_dir), "--text", sentence, "--json", "-").stdout)
    from rnnexp.tasks import task_from_checkpoint
    from rnnexp.tokenizers import vocab_from_symbols

    task = task_from_checkpoint(load_checkpoint(run_dir / "checkpoints" / "last.ckpt"))
    model, vocab = task.model.eval(), vocab_from_symbols(task.config["tokenizer"], task.vocab)
    # By hand: one token at a time, each scored by the distribution the model gave after the one before.
    total, state, previous = 0.0, None, int(vocab.encode("\n")[0])
    with torch.no_grad():
        for token in map(int, vocab.encode(sentence)):
            logits, state = model(torch.tensor([[previous]]), state)
            total += float(torch.log_softmax(logits[0, 0].float(), -1)[token])
            previous = token
    assert result["tokens"] == len(sentence)
    assert result["log_prob_nats"] == pytest.approx(total, rel=1e-5)
    assert result["bits_per_character"] == pytest.approx(-total / len(sentence) / math.log(2), rel=1e-5)
    surprise = result["most_surprising"]
    assert len(surprise) == 5 and surprise[0]["bits"] >= surprise[-1]["bits"]


def test_a_text_file_is_scored_as_its_text(trained, tmp_path):
    run_dir, _ = trained
    (tmp_path / "line.txt").write_text("the dog runs home")
    by_file = json.loads(run_script("evaluate.py", str(run_dir), "--text-file", str(tmp_path / "line.txt"),
                                    "--json", "-").stdout)
    by_text = json.loads(run_script("evaluate.py", str(run_dir), "--text", "the dog runs home", "--json", "-").stdout)
    assert by_file["log_prob_nats"] == by_text["log_prob_nats"] and by_file["tokens"] == 17


def test_a_likely_sentence_scores_higher_than_its_shuffle(trained):
    run_dir, _ = trained
    scores = [json.loads(run_script("evaluate.py", str(run_dir), "--text", text, "--json", "-").stdout)["log_prob_nats"]
              for text in ("the quick brown fox", "fxo hte cuikq nbrwo")]
    assert scores[0] > scores[1]


def test_the_test_split_is_measured_at_the_end_and_by_evaluate_py_alike(trained):
    run_dir, text = trained
    logged = read_scalars(run_dir)["test/loss"]
    assert [step for step, _ in logged] == [30]
    measured = json.loads(run_script("evaluate.py", str(run_dir), "--json", "-").stdout)
    assert measured["split"] == "test" and measured["loss"] == pytest.approx(logged[0][1], rel=1e-4)
    assert measured["bpc"] == pytest.approx(measured["loss"] / math.log(2), rel=1e-6)
    command = subprocess.run([sys.executable, "scripts/evaluate.py", str(run_dir), "--split", "valid"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)  # the command line, as users run it
    assert command.returncode == 0 and "| loss |" in command.stdout, command.stderr[-3000:]


def test_sampling_is_seeded_and_takes_top_k_and_greedy(trained):
    run_dir, _ = trained
    args = [str(run_dir), "--prime", "the ", "--length", "40"]
    top_k = [run_script("sample.py", *args, "--top-k", "3").stdout for _ in range(2)]
    assert top_k[0] == top_k[1] and top_k[0].startswith("the ")
    greedy = {run_script("sample.py", *args, "--greedy", "--seed", str(seed)).stdout for seed in (1, 2)}
    assert len(greedy) == 1  # no randomness left
    assert run_script("sample.py", *args, "--top-k", "1", "--seed", "7").stdout in greedy  # k=1 is greedy
    assert top_k[0] not in greedy  # and k=3 samples


def test_sample_py_decodes_a_seq2seq_source(tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_seq2seq_config(run_dir))
    beam = run_script("sample.py", str(run_dir), "--source", "abcab", "--beam", "2").stdout.strip()
    greedy = run_script("sample.py", str(run_dir), "--source", "abcab", "--greedy").stdout.strip()
    from rnnexp.tasks import task_from_checkpoint

    task = task_from_checkpoint(load_checkpoint(run_dir / "checkpoints" / "last.ckpt")).eval()
    index = {s: i for i, s in enumerate(task.vocab)}
    source = torch.tensor([[index[c]] for c in "abcab"])
    expected = task._text(task.model.greedy(source, torch.tensor([5]), task.bos, task.eos, 20)[:, 0])
    assert greedy == expected and set(beam) <= set("abcdefghij")
