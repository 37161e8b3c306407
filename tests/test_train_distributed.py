"""Training across processes: `persona-eval train ... --num-processes N` (accelerate, gloo on CPU).

Fast tests cover the batch layout, the relaunched command line, the input checks made before
any process starts and the documented multi-node accelerate config. The slow ones train the
embedded SmolLM2 for 3 steps in 2 real CPU processes (gloo) and in 1 process with the same
effective batch size: PT_sft through the command line, then PT_dpo from it, and compare the
loss at every step; then a worker that fails mid-training, and a Ctrl-C.

Why the losses can be compared tightly: both setups see the same rows in every optimizer step
(accelerate shuffles once with the same seed and deals the micro-batches out in turn, see
`trainers.config.batch_layout`), LoRA dropout is 0 (each process would draw its own masks),
and each micro-batch is padded alike. What remains is float32 summation order (an all-reduce
over 2 processes against accumulation in one), measured ~1e-7 relative; the tolerance, 1e-4
relative, is far below what one changed row does to a step's loss or gradient norm (percent).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_eval.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
# Short sequences and 1-row micro-batches keep each step around a second per process on CPU.
TINY = "max_length: 96\nper_device_batch_size: 1\nlogging_steps: 1\neval_fraction: 0.125\nlora: {dropout: 0.0}\n"
STEPS, LIMIT, EFFECTIVE = 3, 8, 2
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def cli():
    from persona_eval.cli import _add_plugin_commands
    from persona_eval.cli import cli as group

    _add_plugin_commands()
    return group


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY)
    return path


def _env() -> dict[str, str]:
    # Each of the 2 processes gets one of CI's 2 cores.
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    return env


def _train_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "persona_eval.cli", "train", *map(str, args)], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


# -- batch layout ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, world, expected",
    [
        ({}, 1, (4, 1, 4)),
        ({}, 2, (4, 1, 8)),
        ({"gradient_accumulation_steps": 3}, 2, (4, 3, 24)),
        ({"effective_batch_size": 4, "per_device_batch_size": 2}, 1, (2, 2, 4)),
        ({"effective_batch_size": 4, "per_device_batch_size": 2}, 2, (2, 1, 4)),
        ({"effective_batch_size": 4, "per_device_batch_size": 2}, 4, (1, 1, 4)),
        ({"effective_batch_size": 12, "per_device_batch_size": 5}, 2, (3, 2, 12)),  # 6 a process: 3 x 2
        ({"effective_batch_size": 14, "per_device_batch_size": 4}, 2, (1, 7, 14)),  # 7 is prime
        ({"effective_batch_size": 2, "per_device_batch_size": 8}, 1, (2, 1, 2)),
    ],
)
def test_batch_layout(settings, world, expected):
    from persona_eval.trainers.config import TrainConfig, batch_layout

    layout = batch_layout(TrainConfig(**settings), world)
    got = (layout.per_device_batch_size, layout.gradient_accumulation_steps, layout.effective_batch_size)
    assert got == expected and layout.world_size == world
    assert layout.to_dict()["effective_batch_size"] == expected[2]


def test_batch_layout_errors():
    from persona_eval.trainers.config import TrainConfig, batch_layout

    with pytest.raises(UsageError, match="effective batch size 5 is not a multiple of the 2 processes"):
        batch_layout(TrainConfig(effective_batch_size=5), 2)
    with pytest.raises(UsageError, match="not both"):
        batch_layout(TrainConfig(effective_batch_size=4, gradient_accumulation_steps=2), 1)


def test_effective_batch_size_loads_from_a_config_file(tmp_path):
    from persona_eval.trainers.config import load_config

    (tmp_path / "c.toml").write_text("effective_batch_size = 0\n")
    with pytest.raises(UsageError, match="c.toml:1: effective_batch_size"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "c.yaml").write_text("effective_batch_size: 16\nper_device_batch_size: 2\n")
    assert load_config(tmp_path / "c.yaml").effective_batch_size == 16


# -- the relaunch ---------------------------------------------------------------------------


def test_workers_get_the_same_options(cli):
    """The workers' command line parses back to the caller's options (without --num-processes)."""
    from persona_eval.trainers.commands import dpo_command
    from persona_eval.trainers.distributed import launch_arguments, worker_argv

    args = ["--task", "demo", "--from", "out/sft", "--persona", "all", "--output", "out/x y", "--max-steps", "3",
            "--limit", "0", "--num-processes", "2", "--effective-batch-size", "8", "--include-path", "a",
            "--include-path", "b", "--quiet", "--json", "--config", "c.yaml"]
    context = dpo_command.make_context("dpo", list(args))
    options = dict(context.params)
    argv = worker_argv(dpo_command, options)
    assert "--num-processes" not in argv and "--base-model" not in argv and "--resume" not in argv
    again = dict(dpo_command.make_context("dpo", list(argv)).params)
    assert again == {**options, "num_processes": None}
    launch = launch_arguments(2, "persona_eval.trainers.dpo", argv)
    assert launch[launch.index("--num_processes") + 1] == "2" and "--multi_gpu" in launch and "--cpu" not in launch
    assert launch[launch.index("-m") + 1:] == ["persona_eval.trainers.dpo", *argv]


def test_publish_replaces_the_earlier_output_and_repoints_kept_checkpoints(tmp_path):
    from persona_eval.trainers.distributed import partial_dir, publish

    out = tmp_path / "sft"
    out.mkdir()
    (out / "metadata.json").write_text("{}")  # an earlier output that --overwrite replaces
    work = partial_dir(out)
    checkpoint = work / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (work / "metadata.json").write_text('{"new": true}')
    (checkpoint / "trainer_state.json").write_text(json.dumps({"best_model_checkpoint": str(checkpoint), "global_step": 2}))
    publish(work, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]
    assert json.loads((out / "metadata.json").read_text()) == {"new": True}
    state = json.loads((out / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    # What the Trainer needs to end a resumed run on its best epoch (it drops a path that is gone).
    assert state == {"best_model_checkpoint": str(out / "checkpoints" / "checkpoint-2"), "global_step": 2}


def test_help_imports_neither_torch_nor_accelerate():
    code = (
        "import sys\nfrom persona_eval.cli import main\n"
        "for argv in (['--help'], ['train', 'sft', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as exc:\n        assert exc.code in (0, None)\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'accelerate', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--num-processes" in done.stdout and "--effective-batch-size" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY="


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--num-processes", "2", "--effective-batch-size", "3"], "effective batch size 3 is not a multiple of the 2 processes"),
        (["--num-processes", "2", "--task", "no-such-task"], "unknown task 'no-such-task'"),
        (["--num-processes", "0"], "--num-processes"),
    ],
)
def test_bad_inputs_stop_before_any_process_starts(cli, tmp_path, args, fragment, embedded_model_dir):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["train", "sft", "--base-model", "hf:embedded", "--output", str(out), *args],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_num_processes_under_a_launcher_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["train", "sft", "--base-model", "hf:embedded", "--output", str(tmp_path / "o"),
                                      "--num-processes", "2"], catch_exceptions=False)
    assert result.exit_code == 2 and "already one of 2 launched processes" in result.output


def test_the_documented_multi_node_config_is_a_valid_accelerate_config(tmp_path):
    """accelerate reads it and would start 8 workers on the second of 2 machines, meeting at the main one."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DistributedType
    from accelerate.utils.launch import prepare_multi_gpu_env

    text = (REPO / "docs/training.md").read_text()
    block = re.search(r"<!-- accelerate-config -->\s*```yaml\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "multi-node.yaml"
    path.write_text(block)
    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert (config.num_machines, config.num_processes, config.machine_rank) == (2, 16, 0)
    assert config.distributed_type == DistributedType.MULTI_GPU and config.main_process_port == 29500
    # The documented command line on the second machine, as accelerate launch resolves it.
    argv = ["--config_file", str(path), "--machine_rank", "1", "-m", "persona_eval.trainers.sft", "--task", "demo"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert args.multi_gpu and (args.num_machines, args.num_processes, args.machine_rank) == (2, 16, 1)
    prepare_multi_gpu_env(args)
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == ("2", "8", 1)
    assert args.rdzv_endpoint == "10.0.0.1:29500" and args.rdzv_backend == "static"
    assert args.training_script == "persona_eval.trainers.sft" and args.module


# -- training in 2 processes ----------------------------------------------------------------


def _curve(meta) -> list[tuple[int, float, float]]:
    return [(e["step"], e["loss"], e["grad_norm"]) for e in meta["log_history"] if "loss" in e]


def _assert_same_curve(two, one):
    """Loss and gradient norm at every step. DPO's loss starts at log 2 whatever the rows (policy =
    reference), so its gradient norm is what shows a different row."""
    a, b = _curve(two), _curve(one)
    assert [s for s, _, _ in a] == [s for s, _, _ in b] == list(range(1, STEPS + 1))
    for (step, loss_a, norm_a), (_, loss_b, norm_b) in zip(a, b):
        assert math.isfinite(loss_a) and math.isclose(loss_a, loss_b, rel_tol=LOSS_RTOL), (step, loss_a, loss_b)
        assert norm_a > 0 and math.isclose(norm_a, norm_b, rel_tol=LOSS_RTOL), (step, norm_a, norm_b)
    if "best_eval_loss" in two["losses"] and two["losses"]["best_eval_loss"] is not None:
        assert math.isclose(two["losses"]["best_eval_loss"], one["losses"]["best_eval_loss"], rel_tol=LOSS_RTOL)


def _assert_two_process_metadata(meta, out: Path):
    assert meta["distributed"] == {"world_size": 2, "per_device_batch_size": 1, "gradient_accumulation_steps": 1,
                                   "effective_batch_size": EFFECTIVE, "num_machines": 1, "backend": "gloo"}
    hyper = meta["hyperparameters"]
    assert (hyper["world_size"], hyper["effective_batch_size"]) == (2, EFFECTIVE) and meta["device"] == "2 x cpu"
    assert meta["status"] == "complete" and meta["steps"]["global_step"] == STEPS
    assert meta["evaluate_with"]["model"].endswith(f"adapter={out.resolve()}")
    assert not (out / "checkpoints").exists() and not (out.parent / f".{out.name}.partial").exists()
    assert "2 process(es)" in (out / "README.md").read_text()


def _assert_generates(meta):
    """The adapter loads into the hf generator from the recorded spec and generates."""
    from persona_eval.contracts.factories import build_generator
    from persona_eval.contracts.records import GenParams, GenRequest

    generator = build_generator(meta["evaluate_with"]["model"])
    assert generator.identity()["adapter"] == meta["adapter_hash"]
    [result] = generator.generate([GenRequest(id="q", prompt="How do I cook white rice?", params=GenParams(max_new_tokens=6))])
    assert result.text.strip()


def _one_process(kind, out, config_path, **options):
    from persona_eval.trainers.common import train
    from persona_eval.trainers.config import load_config

    config = load_config(config_path).model_copy(update={"effective_batch_size": EFFECTIVE})
    result = train(kind, task="demo", output=out, max_steps=STEPS, limit=LIMIT, quiet=True, config=config, **options)
    assert result.metadata["distributed"]["gradient_accumulation_steps"] == 2  # 1 process: 2 micro-batches of 1
    return result.metadata


@pytest.fixture(scope="module")
def sft_two(tmp_path_factory, tiny_config, embedded_model_dir):
    out = tmp_path_factory.mktemp("dist") / "pt-sft"
    done = _train_cli("sft", "--task", "demo", "--base-model", "hf:embedded", "--persona", "chosen", "--output", out,
                      "--config", tiny_config, "--max-steps", STEPS, "--limit", LIMIT, "--num-processes", 2,
                      "--effective-batch-size", EFFECTIVE, "--quiet", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads(done.stdout)
    assert meta == json.loads((out / "metadata.json").read_text())
    return out, meta


@pytest.mark.slow
def test_sft_in_two_processes_matches_one_process(sft_two, tiny_config, tmp_path):
    out, meta = sft_two
    _assert_two_process_metadata(meta, out)
    one = _one_process("sft", tmp_path / "one", tiny_config, base_model="hf:embedded", persona="chosen")
    _assert_same_curve(meta, one)
    _assert_generates(meta)


@pytest.mark.slow
def test_dpo_in_two_processes_matches_one_process(sft_two, tiny_config, tmp_path):
    sft, _ = sft_two
    out = tmp_path / "pt-dpo"
    done = _train_cli("dpo", "--task", "demo", "--from", sft, "--persona", "chosen", "--output", out, "--config", tiny_config,
                      "--max-steps", STEPS, "--limit", LIMIT, "--num-processes", 2, "--effective-batch-size", EFFECTIVE, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    _assert_two_process_metadata(meta, out)
    assert meta["started_from"]["stage"] == "sft" and "rewards/accuracies" in meta["losses"]
    one = _one_process("dpo", tmp_path / "one", tiny_config, base_model=None, from_=str(sft), persona="chosen")
    _assert_same_curve(meta, one)
    _assert_generates(meta)


FAILING_WORKER = '''
"""A training worker whose rank 1 fails after its first step (the rest is the real worker)."""
import os

from transformers import TrainerCallback

import persona_eval.trainers.common as common


class Fail(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if os.environ.get("RANK") == "1":
            raise RuntimeError("disk on fire")


real = common.build_trainer


def build_trainer(*args, **kwargs):
    trainer = real(*args, **kwargs)
    trainer.add_callback(Fail())
    return trainer


common.build_trainer = build_trainer
from persona_eval.trainers.commands import run_module

run_module("sft")
'''


@pytest.mark.slow
def test_a_failing_worker_is_one_line_and_leaves_no_output(tmp_path, tiny_config, monkeypatch, embedded_model_dir):
    from persona_eval.trainers import distributed
    from persona_eval.trainers.commands import sft_command

    (tmp_path / "failing_worker.py").write_text(FAILING_WORKER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "runs" / "sft"
    options = dict(sft_command.make_context("sft", [
        "--task", "demo", "--base-model", "hf:embedded", "--output", str(out), "--config", str(tiny_config),
        "--max-steps", str(STEPS), "--limit", str(LIMIT), "--quiet"]).params)
    with pytest.raises(distributed.WorkerFailed) as info:
        distributed.launch("sft", sft_command, options, num_processes=2, use_cpu=True, out=out, resume=False,
                           module="failing_worker")
    message = str(info.value)
    assert message.startswith("training failed on rank 1 of 2: RuntimeError: disk on fire"), message
    assert "\n" not in message and info.value.exit_code == 1
    trace = Path(re.search(r"\(traceback: (\S+)\)", message).group(1))
    assert "disk on fire" in trace.read_text()
    shutil.rmtree(trace.parent)  # kept for the user to read; the test has read it
    assert list((tmp_path / "runs").iterdir()) == []  # neither the output nor its hidden work folder


@pytest.mark.slow
def test_ctrl_c_stops_every_process_after_the_same_step(tmp_path, tiny_config, embedded_model_dir):
    out = tmp_path / "sft"
    process = subprocess.Popen(
        [sys.executable, "-m", "persona_eval.cli", "train", "sft", "--task", "demo", "--base-model", "hf:embedded",
         "--output", str(out), "--config", str(tiny_config), "--max-steps", "40", "--limit", str(LIMIT),
         "--num-processes", "2", "--quiet"],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    partial = tmp_path / ".sft.partial"
    deadline = time.time() + 300
    while not partial.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert partial.exists(), process.communicate()[1][-3000:]
    process.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends the command
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["status"] == "interrupted" and meta["distributed"]["world_size"] == 2
    step = meta["steps"]["global_step"]
    assert 1 <= step < 40 and (out / "checkpoints" / f"checkpoint-{step}").is_dir()
    # Each process saved its own random state into the same checkpoint: both stopped there.
    assert {p.name for p in (out / "checkpoints" / f"checkpoint-{step}").glob("rng_state_*.pth")} == {
        "rng_state_0.pth", "rng_state_1.pth"}
    assert "Stopping all processes after this step" in stderr and not partial.exists()
