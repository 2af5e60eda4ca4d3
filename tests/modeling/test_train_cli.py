"""`python -m modeling.train`: the classic flags, end to end on real public cases, and errors for people."""

import json
import subprocess
import sys
from itertools import islice
from pathlib import Path

import pytest

from modeling.runtime import EngineConfig, HFEngine
from modeling.train import build_parser, main
from tests.shared_data import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def en_dev_slice(tmp_path) -> Path:
    """The first 48 cases of the English development set (DDXPlus and MedPix)."""
    with (SHARED_DATA / "en-dev.jsonl").open(encoding="utf-8") as source:
        lines = list(islice(source, 48))
    path = tmp_path / "en-dev-slice.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_the_cli_fine_tunes_end_to_end_on_a_slice_of_real_cases(tiny_model_dir, en_dev_slice, tmp_path):
    output_dir = tmp_path / "run"
    completed = subprocess.run(
        [sys.executable, "-m", "modeling.train", "--base_model", str(tiny_model_dir), "--train_file", str(en_dev_slice),
         "--output_dir", str(output_dir), "--epochs", "1", "--batch_size", "8", "--max_length", "256",
         "--learning_rate", "1e-3", "--weight_decay", "0.01", "--warmup_steps", "0.1", "--eval_steps", "2",
         "--save_steps", "2", "--logging_steps", "1", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.05",
         "--term_weight", "2", "--seed", "3", "--finetuning_type", "lora"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )

    assert completed.returncode == 0, completed.stderr
    assert "step 1/" in completed.stderr and "eval loss" in completed.stderr
    adapter_dir = Path(completed.stdout.split("adapter: ", 1)[1].splitlines()[0])
    summary = json.loads((output_dir / "training.json").read_text())
    # 48 cases, a tenth held out by id: one epoch of batches of 8 is ceil(train / 8) steps.
    assert summary["steps"] == summary["total_steps"] == -(-summary["train_examples"] // 8)
    assert summary["train_examples"] + summary["val_examples"] == 48
    assert summary["config"]["lora_r"] == 8 and summary["config"]["term_weight"] == 2.0
    engine = HFEngine.load(EngineConfig(base_model=str(tiny_model_dir), adapter=str(adapter_dir)))
    assert engine.info.adapter == str(adapter_dir)


def test_a_small_model_is_fine_tuned_whole_by_default_and_saved_as_a_model_of_its_own(tiny_model_dir, en_dev_slice,
                                                                                      tmp_path, capsys):
    code = main(["--base_model", str(tiny_model_dir), "--train_file", str(en_dev_slice), "--output_dir",
                 str(tmp_path / "run"), "--max_steps", "2", "--batch_size", "8", "--max_length", "256", "--no_progress"])
    out = capsys.readouterr()
    assert code == 0
    assert "the whole model, learning rate 0.001" in out.err
    model_dir = Path(out.out.split("model: ", 1)[1].splitlines()[0])
    assert HFEngine.load(EngineConfig(base_model=str(model_dir))).info.adapter is None


def test_the_classic_flags_are_all_there():
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    classic = ("--base_model --train_file --val_file --output_dir --epochs --batch_size --max_length --learning_rate "
               "--weight_decay --warmup_steps --eval_steps --save_steps --logging_steps --lora_r --lora_alpha --lora_dropout "
               "--quantization --term_weight --distill_teacher --report_to --resume_from_checkpoint --seed "
               "--finetuning_type").split()
    assert set(classic) <= flags


def test_a_missing_training_file_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    code = main(["--base_model", str(tiny_model_dir), "--train_file", str(tmp_path / "missing.jsonl"),
                 "--output_dir", str(tmp_path / "out")])
    assert code == 2
    assert f"error: training file not found: {tmp_path / 'missing.jsonl'}" in capsys.readouterr().err


def test_an_unknown_model_is_a_clear_error(training_jsonl, tmp_path, capsys):
    code = main(["--base_model", str(tmp_path / "no-such-model"), "--train_file", str(training_jsonl),
                 "--output_dir", str(tmp_path / "out")])
    assert code == 2
    assert "error: cannot load the base model: model files missing at" in capsys.readouterr().err


def test_bad_numbers_are_a_clear_error(tiny_model_dir, training_jsonl, tmp_path, capsys):
    code = main(["--base_model", str(tiny_model_dir), "--train_file", str(training_jsonl), "--output_dir", str(tmp_path),
                 "--batch_size", "0", "--lora_dropout", "1.5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "batch_size must be at least 1" in err and "lora_dropout must be in [0, 1)" in err


def test_the_cli_resumes_from_the_latest_checkpoint(tiny_model_dir, training_jsonl, tmp_path, capsys):
    common = ["--base_model", str(tiny_model_dir), "--train_file", str(training_jsonl), "--output_dir", str(tmp_path),
              "--batch_size", "8", "--max_length", "128", "--save_steps", "2", "--eval_steps", "50", "--no_progress"]
    assert main([*common, "--max_steps", "3"]) == 0
    capsys.readouterr()

    assert main([*common, "--max_steps", "5", "--resume_from_checkpoint", "latest"]) == 0
    captured = capsys.readouterr()
    assert "resuming at step 3" in captured.err
    assert "steps: 5/5" in captured.out
