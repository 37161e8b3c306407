"""The trainers: config files, training rows rendered like evaluation, SFT -> DPO -> evaluate.

Fast tests cover the config loader and the command's input checks. The slow ones train the
embedded SmolLM2 on CPU for two steps (batch 2, max length 256, the demo task's first 8
train items), evaluate the adapters with `persona-eval run --limit 2`, and check that the
saved adapter reloads bit-identically and that a Ctrl-C leaves a usable, resumable output.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_eval.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SMALL = "max_length: 256\nper_device_batch_size: 2\nlogging_steps: 1\n"


@pytest.fixture(scope="module")
def cli():
    from persona_eval.cli import _add_plugin_commands
    from persona_eval.cli import cli as group

    _add_plugin_commands()
    return group


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text(SMALL)
    return path


def invoke(cli, *args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


# -- config ---------------------------------------------------------------------------------


def test_defaults_follow_the_paper():
    from persona_eval.trainers.config import TrainConfig

    config = TrainConfig()
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (16, 32, 0.05)
    assert (config.sft.learning_rate, config.dpo.learning_rate, config.dpo.beta) == (2e-5, 5e-6, 0.1)
    assert config.max_length == 512 and config.eval_fraction > 0


def test_yaml_and_toml_configs_load_the_same(tmp_path):
    from persona_eval.trainers.config import load_config

    (tmp_path / "c.yaml").write_text("max_length: 128\nlora: {r: 8}\ndpo:\n  beta: 0.2\n")
    (tmp_path / "c.toml").write_text("max_length = 128\n\n[lora]\nr = 8\n\n[dpo]\nbeta = 0.2\n")
    a, b = load_config(tmp_path / "c.yaml"), load_config(tmp_path / "c.toml")
    assert a == b
    assert (a.max_length, a.lora.r, a.lora.alpha, a.dpo.beta, a.dpo.learning_rate) == (128, 8, 32, 0.2, 5e-6)
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == load_config(None)


@pytest.mark.parametrize(
    "name, text, where, fragment",
    [
        ("typo.yaml", "max_length: 256\nlora:\n  rank: 8\n", "typo.yaml:3", "lora.rank: unknown setting (known: r, alpha, dropout, target_modules)"),
        ("type.yaml", "seed: 1\nsft:\n  learning_rate: fast\n", "type.yaml:3", "sft.learning_rate"),
        ("syntax.yaml", "a: [1,\n", "syntax.yaml:", "invalid YAML"),
        ("typo.toml", "seed = 1\n[dpo]\nbeta = 0.1\nbetta = 2\n", "typo.toml:4", "dpo.betta: unknown setting (did you mean 'beta'?)"),
        ("range.toml", "max_length = 4\n", "range.toml:1", "max_length"),
        ("syntax.toml", "seed = \n", "syntax.toml:1", "invalid TOML"),
        ("list.yaml", "- 1\n", "list.yaml:1", "must be a mapping"),
        ("c.json", "{}", "c.json", "unsupported config file type"),
    ],
)
def test_config_errors_name_file_and_line(tmp_path, name, text, where, fragment):
    from persona_eval.trainers.config import load_config

    (tmp_path / name).write_text(text)
    with pytest.raises(UsageError) as info:
        load_config(tmp_path / name)
    message = str(info.value)
    assert f"{tmp_path}/{where}" in message and fragment in message, message
    assert "\n" not in message


def test_train_help_imports_no_model_library():
    code = (
        "import sys\nfrom persona_eval.cli import main\n"
        "try:\n    main(['train', 'dpo', '--help'])\nexcept SystemExit as exc:\n    assert exc.code in (0, None)\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--persona [chosen|none|all]" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY="


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--task", "no-such-task", "--base-model", "hf:embedded"], "unknown task 'no-such-task'"),
        (["--base-model", "openai:gpt-4o"], "training needs a Hugging Face model"),
        (["--base-model", "hf:embedded,adapter=x"], "pass the adapter with --from"),
        (["--base-model", "./missing-model"], "is not a model folder"),
        (["--from", "./missing-adapter"], "no such adapter or model folder"),
        ([], "--base-model is required"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(cli, tmp_path, args, fragment):
    out = tmp_path / "out"
    result = invoke(cli, "train", "sft", "--output", out, "--max-steps", "1", *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_bad_config_and_busy_output_exit_2(cli, tmp_path):
    (tmp_path / "bad.yaml").write_text("lora:\n  alpha: -1\n")
    result = invoke(cli, "train", "dpo", "--base-model", "hf:embedded", "--output", tmp_path / "o", "--config", tmp_path / "bad.yaml")
    assert result.exit_code == 2 and "bad.yaml:2" in result.output and "lora.alpha" in result.output
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = invoke(cli, "train", "sft", "--base-model", "hf:embedded", "--output", busy)
    assert result.exit_code == 2 and "is not empty" in result.output
    result = invoke(cli, "train", "sft", "--base-model", "hf:embedded", "--output", busy, "--overwrite")
    assert result.exit_code == 2 and "refusing to delete" in result.output
    assert (busy / "notes.txt").read_text() == "mine"


def test_an_item_without_the_persona_the_mode_needs_is_named(cli, tmp_path, embedded_model_dir):
    rows = [json.loads(line) for line in (REPO / "tasks/demo/data/train.jsonl").read_text().splitlines()[:4]]
    rows[2]["rejected_persona"] = ""
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "t.yaml").write_text("name: tiny\ndataset:\n  test: test.jsonl\n  train: train.jsonl\n")
    out = tmp_path / "out"
    result = invoke(cli, "train", "sft", "--task", tmp_path / "t.yaml", "--base-model", "hf:embedded", "--persona", "all", "--output", out)
    assert result.exit_code == 2, result.output
    assert f"item {rows[2]['id']!r} has an empty rejected persona" in result.output and "train.jsonl" in result.output
    assert not out.exists()


# -- training rows == evaluation inputs -----------------------------------------------------


def _eval_requests(examples, split: str, strategy: str):
    from persona_eval.contracts.records import Persona
    from persona_eval.pipeline.run import Run, RunOptions

    run = Run(RunOptions(task="demo", split=split, model="hf:embedded", strategy=strategy, limit=0), progress=False)
    personas = [Persona(text=e.persona_for(split), source="gold") for e in examples]
    return run.requests("test", examples, personas)


@pytest.mark.slow
def test_training_input_is_the_evaluation_input_token_for_token(embedded_model_dir):
    """Each row's prompt is what `persona-eval run` feeds the hf generator for that item and persona."""
    from persona_eval.contracts.factories import build_generator
    from persona_eval.taskfile.loading import resolve_task
    from persona_eval.trainers.data import build_training_data

    task = resolve_task("demo")
    generator = build_generator("hf:embedded")
    _, tokenizer = generator._load()
    examples = {e.id: e for e in task.load("train")[:6]}
    for kind, mode, split, strategy in [("sft", "chosen", "chosen", "pt"), ("dpo", "none", "chosen", "baseline"),
                                        ("dpo", "all", "chosen", "pt"), ("dpo", "all", "rejected", "pt")]:
        data = build_training_data(task, kind, mode, tokenizer, limit=6, eval_fraction=0.0)
        rows = {rid: row for rid, row in zip(data.train_ids, data.train)}
        wanted = [e for e in examples.values() if f"{e.id}:{split}" in rows]
        assert len(wanted) == 6
        requests = _eval_requests(wanted, split, strategy)
        for example, request in zip(wanted, requests):
            row = rows[f"{example.id}:{split}"]
            text, specials = generator.render(request)
            assert row["prompt"] == text
            # TRL tokenizes the prompt string with the tokenizer's defaults; the generator encodes its way.
            prompt_ids = tokenizer(row["prompt"])["input_ids"]
            assert prompt_ids == generator._encode([(text, specials)])["input_ids"][0].tolist()
            # TRL tokenizes prompt + response together and trains on what follows the common
            # prefix: the prompt's tokens must survive that intact.
            for response in (row.get("completion"), row.get("chosen"), row.get("rejected")):
                if response is not None:
                    joined = tokenizer(row["prompt"] + response + tokenizer.eos_token)["input_ids"]
                    assert joined[: len(prompt_ids)] == prompt_ids
            persona = example.persona_for(split)
            assert (persona in row["prompt"]) == (strategy == "pt")
            preferred, other = (example.chosen, example.rejected) if split == "chosen" else (example.rejected, example.chosen)
            assert row.get("completion", row.get("chosen")) == preferred.strip()
            if kind == "dpo":
                assert row["rejected"] == other.strip()
    both = build_training_data(task, "sft", "all", tokenizer, limit=8, eval_fraction=0.25, seed=3)
    assert len(both.train) == 12 and len(both.eval) == 4
    held = {i.rsplit(":", 1)[0] for i in both.eval_ids}
    assert not held & {i.rsplit(":", 1)[0] for i in both.train_ids}  # both copies of an item on one side


# -- training end to end --------------------------------------------------------------------


def _adapter_state(model):
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model, adapter_name="default").items()}


def _assert_reloads_bit_identically(trained: dict, meta: dict, folder: Path):
    """The adapter tensors read back from the folder equal the trained ones, bit for bit."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = next(iter(trained.values())).dtype
    base = AutoModelForCausalLM.from_pretrained(meta["base_model"]["path"], dtype=dtype)
    reloaded = _adapter_state(PeftModel.from_pretrained(base, str(folder)))
    assert trained.keys() == reloaded.keys() and len(trained) > 0
    for key, tensor in trained.items():
        assert tensor.dtype == reloaded[key].dtype and tensor.equal(reloaded[key]), key


def _assert_losses(meta, kind):
    losses = meta["losses"]
    assert losses["finite"] is True
    for key in ("train_loss", "last_loss", "best_eval_loss"):
        assert isinstance(losses[key], float) and math.isfinite(losses[key]), (key, losses)
    if kind == "dpo":
        assert "rewards/accuracies" in losses
    assert meta["steps"]["global_step"] == 2 and meta["status"] == "complete"


def _evaluate(cli, tmp_path, meta):
    out = tmp_path / "run"
    result = invoke(
        cli, "run", "--task", "demo", "--model", meta["evaluate_with"]["model"], "--strategy", meta["evaluate_with"]["strategy"],
        "--baseline", "hf:embedded", "--limit", "2", "--output-dir", out, "--quiet",
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    identity = results["identities"]["test"]
    assert identity["adapter"] == meta["adapter_hash"] and identity["revision"] == meta["base_model"]["identity"]["revision"]
    assert results["identities"]["baseline"]["adapter"] is None
    generations = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len([g for g in generations if g["role"] == "test"]) == 2


def _train_api(kind, out, **options):
    """Train through the Python API; keep the trained adapter tensors, drop the trainer."""
    from persona_eval.trainers.common import train

    result = train(kind, task="demo", output=out, max_steps=2, limit=8, quiet=True, **options)
    return result.metadata, _adapter_state(result.model), result.data


@pytest.fixture(scope="module")
def sft_adapter(cli, tmp_path_factory, small_config, embedded_model_dir):
    """PT_sft through the command line: 2 steps on the demo train split's first 8 items."""
    out = tmp_path_factory.mktemp("pt") / "sft"
    result = invoke(cli, "train", "sft", "--task", "demo", "--base-model", "hf:embedded", "--persona", "chosen", "--output", out,
                    "--config", small_config, "--max-steps", "2", "--limit", "8", "--quiet")
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def pt_dpo(sft_adapter, tmp_path_factory, small_config):
    """PT_dpo from the SFT adapter; no --base-model: the adapter's recorded base is used."""
    from persona_eval.trainers.config import load_config

    out = tmp_path_factory.mktemp("pt") / "dpo"
    meta, trained, _ = _train_api("dpo", out, base_model=None, from_=str(sft_adapter), persona="chosen",
                                  config=load_config(small_config))
    return meta, trained, out


@pytest.fixture(scope="module")
def baseline_dpo(tmp_path_factory, small_config, embedded_model_dir):
    from persona_eval.trainers.config import load_config

    out = tmp_path_factory.mktemp("baseline") / "dpo"
    meta, trained, data = _train_api("dpo", out, base_model="hf:embedded", persona="none", config=load_config(small_config))
    return meta, trained, out, data


@pytest.mark.slow
def test_pt_sft_output(sft_adapter):
    meta = json.loads((sft_adapter / "metadata.json").read_text())
    _assert_losses(meta, "sft")
    assert meta["kind"] == "sft" and meta["persona_mode"] == "chosen" and meta["strategy"] == "pt"
    assert meta["base_model"]["spec"] == "hf:embedded" and meta["base_model"]["identity"]["revision"].startswith("sha256:")
    assert meta["data"]["items"] == 8 and meta["data"]["train_rows"] + meta["data"]["eval_rows"] == 8
    assert meta["hyperparameters"]["lora_effective"]["r"] == 16 and meta["hyperparameters"]["learning_rate"] == 2e-5
    assert meta["versions"]["trl"] and meta["versions"]["peft"] and meta["task"]["data_hash"]
    assert (sft_adapter / "README.md").read_text().startswith("# PT_sft adapter")
    assert (sft_adapter / "adapter_model.safetensors").exists() and (sft_adapter / "tokenizer.json").exists()
    assert not (sft_adapter / "checkpoints").exists() and not (sft_adapter / "training_args.bin").exists()


@pytest.mark.slow
def test_pt_dpo_continues_the_sft_adapter_and_reloads_bit_identically(pt_dpo, sft_adapter):
    from safetensors.torch import load_file

    meta, trained, out = pt_dpo
    sft_meta = json.loads((sft_adapter / "metadata.json").read_text())
    _assert_losses(meta, "dpo")
    assert meta["started_from"]["kind"] == "adapter" and meta["started_from"]["stage"] == "sft"
    assert meta["started_from"]["adapter_hash"] == sft_meta["adapter_hash"] != meta["adapter_hash"]
    assert meta["hyperparameters"]["beta"] == 0.1 and meta["hyperparameters"]["learning_rate"] == 5e-6
    assert not (out / "ref").exists()  # TRL's frozen reference copy is not part of the output
    assert json.loads((out / "metadata.json").read_text())["adapter_hash"] == meta["adapter_hash"]
    _assert_reloads_bit_identically(trained, meta, out)
    # One adapter on the original base: the SFT adapter's tensors, moved on by DPO.
    before, after = load_file(sft_adapter / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys() and any(not before[k].equal(after[k]) for k in before)


@pytest.mark.slow
def test_pt_dpo_evaluates_with_persona_eval_run(cli, pt_dpo, tmp_path):
    _evaluate(cli, tmp_path, pt_dpo[0])


@pytest.mark.slow
def test_baseline_dpo_never_sees_a_persona_and_reloads_bit_identically(baseline_dpo):
    meta, trained, out, data = baseline_dpo
    _assert_losses(meta, "dpo")
    assert meta["persona_mode"] == "none" and meta["strategy"] == "baseline" and meta["started_from"] is None
    assert meta["evaluate_with"]["strategy"] == "inline"  # the paper gives standard DPO the persona in the first person
    assert all("Persona:" not in row["prompt"] for row in data.train + data.eval)
    assert (out / "README.md").read_text().startswith("# baseline DPO adapter")
    _assert_reloads_bit_identically(trained, meta, out)


@pytest.mark.slow
def test_baseline_dpo_evaluates_with_persona_eval_run(cli, baseline_dpo, tmp_path):
    _evaluate(cli, tmp_path, baseline_dpo[0])


@pytest.mark.slow
def test_ctrl_c_leaves_a_usable_adapter_and_resumes(tmp_path, embedded_model_dir):
    from transformers import TrainerCallback

    from persona_eval.trainers.common import train
    from persona_eval.trainers.config import TrainConfig

    class PressCtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                os.kill(os.getpid(), signal.SIGINT)

    config = TrainConfig(max_length=128, per_device_batch_size=2, eval_fraction=0.0, logging_steps=1)
    out = tmp_path / "sft"
    handler_before = signal.getsignal(signal.SIGINT)
    result = train("sft", task="demo", base_model="hf:embedded", output=out, config=config, max_steps=3, limit=6,
                   quiet=True, extra_callbacks=[PressCtrlC()])
    meta = result.metadata
    assert meta["status"] == "interrupted" and meta["interrupted"] and not meta["stopped_mid_step"]
    assert meta["steps"]["global_step"] == 2 and math.isfinite(meta["losses"]["last_loss"])
    assert signal.getsignal(signal.SIGINT) is handler_before  # our handler is gone again
    _assert_reloads_bit_identically(_adapter_state(result.model), meta, out)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert "Interrupted" in (out / "README.md").read_text()
    del result
    resumed = train("sft", task="demo", base_model="hf:embedded", output=out, config=config, max_steps=3, limit=6,
                    quiet=True, resume=True)
    assert resumed.metadata["status"] == "complete" and resumed.metadata["steps"]["global_step"] == 3
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_a_failed_training_leaves_the_earlier_output_as_it_was(tmp_path, embedded_model_dir):
    """A fresh training writes into a hidden sibling folder; a failure removes it, --overwrite's target untouched."""
    from transformers import TrainerCallback

    from persona_eval.trainers.common import train
    from persona_eval.trainers.config import TrainConfig

    class Fail(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            assert (tmp_path / ".sft.partial").is_dir()  # the work folder, beside the untouched output
            raise RuntimeError("disk on fire")

    out = tmp_path / "sft"
    out.mkdir()
    (out / "metadata.json").write_text('{"status": "complete"}')
    (out / "adapter_model.safetensors").write_text("the earlier adapter")
    config = TrainConfig(max_length=96, per_device_batch_size=1, eval_fraction=0.0)
    with pytest.raises(RuntimeError, match="disk on fire"):
        train("sft", task="demo", base_model="hf:embedded", output=out, config=config, max_steps=2, limit=2, quiet=True,
              overwrite=True, extra_callbacks=[Fail()])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]
    assert (out / "adapter_model.safetensors").read_text() == "the earlier adapter"
