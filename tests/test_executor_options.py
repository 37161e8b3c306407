"""`--executor`: parsed once, before any folder; every bad key or value is one line naming it (no cluster needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from persona_eval.contracts.records import GenParams, GenRequest, GenResult, PairRequest, Verdict
from persona_eval.errors import UsageError
from persona_eval.executors import LocalExecutor, RayOptions, distributable, parse_executor
from persona_eval.executors.work import GenerateWork, JudgeWork, request_from_dict, request_to_dict


def test_local_is_the_default():
    assert isinstance(parse_executor(None), LocalExecutor)
    assert isinstance(parse_executor("local"), LocalExecutor)
    assert not LocalExecutor().distributes(GenerateWork("hf:embedded"))


def test_ray_settings_are_parsed_without_connecting():
    executor = parse_executor("ray,address=ray://10.0.0.5:10001,replicas=4,cpus_per_replica=2,gpus_per_replica=0.5,batch_size=16")
    assert executor.name == "ray"
    assert executor.options == RayOptions(address="ray://10.0.0.5:10001", replicas=4, cpus_per_replica=2.0,
                                          gpus_per_replica=0.5, batch_size=16)
    assert executor.describe() == {"name": "ray", "address": "ray://10.0.0.5:10001", "replicas": 4, "cpus_per_replica": 2.0,
                                   "gpus_per_replica": 0.5, "batch_size": 16}
    assert parse_executor("ray").options == RayOptions()
    assert parse_executor("ray,address=auto").options.address == "auto"


def test_parsing_imports_no_ray():
    code = ("import sys; from persona_eval.executors import parse_executor; parse_executor('ray,replicas=2'); "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("text, message", [
    ("dask", "--executor 'dask': unknown executor"),
    ("local,replicas=2", "the local executor takes no settings"),
    ("ray,replica=2", "unknown setting 'replica'; known: address, replicas"),
    ("ray,replicas=0", "replicas='0': must be between 1 and 10000"),
    ("ray,replicas=two", "replicas='two': expected an integer"),
    ("ray,cpus_per_replica=-1", "cpus_per_replica='-1': must be between 0 and 10000"),
    ("ray,gpus_per_replica=nan", "gpus_per_replica='nan': must be between"),
    ("ray,batch_size=1.5", "batch_size='1.5': expected an integer"),
    ("ray,replicas", "'replicas' is not key=value"),
    ("ray,replicas=2,replicas=3", "replicas is given twice"),
    ("ray,address=nowhere", "address='nowhere': expected auto, local, HOST:PORT or ray://HOST:PORT"),
    ("ray,address=ray://host:99999", "expected auto, local, HOST:PORT"),
])
def test_bad_settings_are_one_line_naming_them(text, message):
    with pytest.raises(UsageError) as caught:
        parse_executor(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_executor_fails_before_the_run_directory(tmp_path):
    from cli_support import invoke

    out = tmp_path / "run"
    result = invoke("run", "--limit", "1", "--output-dir", str(out), "--executor", "ray,replicas=0")
    assert result.returncode == 2 and "replicas='0'" in result.stderr
    assert not out.exists()


def test_api_and_file_backends_stay_in_the_driver():
    from persona_eval.contracts.factories import build_generator

    assert not distributable(build_generator("openai:some-model,base_url=http://127.0.0.1:9/v1"))
    assert distributable(build_generator("hf:embedded"))
    assert distributable(object())  # a third-party generator that does not say: sent to the workers


def test_requests_and_results_cross_the_wire_unchanged():
    request = GenRequest(id="x", prompt="Hi", params=GenParams(max_new_tokens=5, temperature=0.7, seed=3, stop=("\n", "END"),
                                                               repetition_penalty=1.1), system="sys", response_prefix="A:", raw=True)
    wire = json.loads(json.dumps(request_to_dict(request)))
    assert request_from_dict(wire) == request
    work = GenerateWork("hf:embedded")
    result = GenResult(text="ok", finish_reason="stop", output_tokens=2, input_tokens=7, usage_source="tokenizer")
    assert work.decode_output(json.loads(json.dumps(work.encode_output(result)))) == result
    judge = JudgeWork(name="gpt-4o", model="hf:embedded", task={})
    pair = PairRequest(id="1", criterion="quality", instruction="Which?", rubric="r", response_a="a", response_b="b")
    assert judge.decode_input(json.loads(json.dumps(judge.encode_input(({"order": "x"}, pair))))) == pair
    verdict = Verdict(winner="A", raw="[RESULT] A", prob_a=0.1 + 0.2, attempts=2,
                      usage={"requests": 2, "input_tokens": 10, "output_tokens": 3, "source": "tokenizer"})
    assert judge.decode_output(json.loads(json.dumps(judge.encode_output(verdict)))) == verdict


def test_a_worker_rebuilds_the_judge_the_driver_built():
    """The judge stage's work spec: the same name, model, task and options give the same identity."""
    from persona_eval.contracts.factories import build_judge
    from persona_eval.executors.work import judge_work
    from persona_eval.taskfile.loading import resolve_task

    task = resolve_task("demo", [])
    driver = build_judge("prometheus", "hf:embedded", task, 3, feedback=True)
    work = judge_work("prometheus", "hf:embedded", task, 3, {"feedback": True})
    rebuilt = json.loads(json.dumps(work.task))  # what a worker receives, through pickling or JSON alike
    worker = JudgeWork(name=work.name, model=work.model, task=rebuilt, task_path=work.task_path, seed=3, options=work.options).build()
    assert worker is not driver and worker.identity() == driver.identity()
