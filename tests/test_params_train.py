"""Parameter mode end to end on CPU: the tiny model learns the toy task by GRPO."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tfgrpo.errors import UserError  # noqa: E402
from tfgrpo.hooks import Hooks  # noqa: E402
from tfgrpo.params import make_config  # noqa: E402
from tfgrpo.params import train_params as run  # noqa: E402
from tfgrpo.params.checkpoint import latest_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def quick(**kw):
    values = dict(task="toy", model="tiny", steps=3, batch_size=4, group_size=4, device="cpu")
    values.update(kw)
    return make_config(**values)


def test_tiny_model_learns_toy_task(tmp_path):
    result = run(make_config(task="toy", model="tiny", steps=60, device="cpu"), out=tmp_path / "run")
    r = result.reward_by_step
    assert result.params_changed and result.status == "finished"
    assert len(r) == 60
    first, last = sum(r[:5]) / 5, sum(r[-5:]) / 5
    assert first < 0.1 and last > first + 0.2, r
    lines = (tmp_path / "run" / "steps.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    for key in ("reward_mean", "reward_std", "kl", "clip_fraction", "entropy", "tokens_per_s", "loss"):
        assert key in rec
    assert result.steps == [json.loads(line) for line in lines]  # the step rows, as steps.jsonl holds them
    assert Path(result.final_checkpoint, "model.safetensors").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "gspo"])
def test_every_loss_trains(tmp_path, loss):
    result = run(quick(loss=loss, beta=0.05), out=tmp_path / "run")
    assert result.params_changed
    rec = json.loads((tmp_path / "run" / "steps.jsonl").read_text().splitlines()[-1])
    assert rec["kl"] is not None and rec["kl"] >= 0


def test_packed_and_naive_forward_train_identically(tmp_path):
    a = run(quick(prefix_sharing="packed"), out=tmp_path / "a" / "run")
    b = run(quick(prefix_sharing="naive"), out=tmp_path / "b" / "run")
    assert a.reward_by_step == b.reward_by_step
    fwd = [json.loads(x)["forward"] for x in (tmp_path / "a" / "run" / "steps.jsonl").read_text().splitlines()]
    assert fwd and all(f.startswith("packed") for f in fwd)
    from safetensors.torch import load_file

    wa = load_file(str(a.final_checkpoint / "model.safetensors"))
    wb = load_file(str(b.final_checkpoint / "model.safetensors"))
    for name in wa:
        # Adam divides by sqrt(v): float32 rounding in a near-zero gradient can move that weight by
        # ~1e-5, under 1% of one Adam step (lr 3e-3 per element and step)
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=3e-5)


def test_resume_continues_where_it_stopped(tmp_path):
    full = run(quick(steps=4, save_every=2), out=tmp_path / "full")
    part = run(quick(steps=2), out=tmp_path / "part" / "run")
    resumed = run(quick(steps=4), out=tmp_path / "part" / "run", resume=True)  # as train(..., resume=True)
    assert resumed.reward_by_step[:2] == part.reward_by_step
    assert resumed.reward_by_step == full.reward_by_step
    assert resumed.resumed_from == 2 and resumed.steps[:2] == part.steps
    assert latest_checkpoint(tmp_path / "part" / "run").name == "step-000004"
    assert len((tmp_path / "part" / "run" / "steps.jsonl").read_text().splitlines()) == 4


def test_lora_trains_only_adapters(tmp_path):
    result = run(quick(lora_r=4, beta=0.1), out=tmp_path / "run")
    assert result.params_changed
    from safetensors.torch import load_file

    names = list(load_file(str(result.final_checkpoint / "model.safetensors")))
    assert names and all("lora_" in n for n in names)


def test_reward_that_raises_is_missing_not_fatal(tmp_path):
    task_file = tmp_path / "flaky.py"
    task_file.write_text(
        "from tfgrpo.rewards import reward\n"
        "from tfgrpo.task_registry import Sample, Task, task\n"
        "@reward\n"
        "def flaky(sample, completion):\n"
        "    if len(completion) % 2:\n"
        "        raise RuntimeError('boom')\n"
        "    return float('b' in completion)\n"
        "@task\n"
        "def flaky_task() -> Task:\n"
        "    return Task(dataset=[Sample(id=str(i), prompt='x:') for i in range(8)], rewards=[flaky], max_tokens=6)\n"
    )
    result = run(quick(task=f"{task_file}:flaky_task", steps=2), out=tmp_path / "run")
    recs = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and result.summary()["steps"] == 2
    assert sum(r["reward_missing"] for r in recs) > 0


def test_model_loads_from_local_directory(tmp_path):
    from tfgrpo.params.model import load_policy, save_pretrained

    model, tok = load_policy("tiny", seed=3)
    save_pretrained(model, tok, tmp_path / "tiny-model")
    loaded, tok2 = load_policy(str(tmp_path / "tiny-model"), dtype="float32")
    assert tok2("echo a:")["input_ids"] == tok("echo a:")["input_ids"]
    for (n, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        torch.testing.assert_close(p, q)
    result = run(quick(model=str(tmp_path / "tiny-model"), lr=1e-3, steps=2), out=tmp_path / "run")
    assert result.params_changed


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(loss="ppo"), "unknown loss"),
        (dict(loss="gspo", token_level=True), "gspo"),
        (dict(loss="dr_grpo", token_level=True), "dr_grpo"),
        (dict(group_size=1), "group-size"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, bad, words):
    with pytest.raises(UserError, match=words) as e:
        make_config(**bad)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no CUDA GPU"):
        run(quick(device="cuda"), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # failed before anything was written or loaded


def test_importing_tfgrpo_params_does_not_import_torch():
    code = "import sys, tfgrpo, tfgrpo.params, tfgrpo.params.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_module_entry_prints_json_last_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "tfgrpo.params",
        "--task",
        "toy",
        "--model",
        "tiny",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--group-size",
        "4",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "r"),
        "--json",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(summary["reward_by_step"]) == 2 and summary["run_dir"] == str(tmp_path / "r")
    bad = subprocess.run(cmd[:3] + ["--loss", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown loss" in bad.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step(tmp_path):
    result = run(quick(device="cuda", generator="hf"), out=tmp_path / "run")
    assert result.device == "cuda" and result.params_changed


@pytest.mark.slow
def test_two_processes_with_torchrun(tmp_path):
    """DDP on CPU (gloo): processes take different prompts and agree on every collective."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "tfgrpo.params",
        "--task",
        "toy",
        "--model",
        "tiny",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--group-size",
        "4",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "ddp"),
        "--json",
        "--quiet",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["processes"] == 2 and summary["params_changed"] and len(summary["reward_by_step"]) == 3


def test_fingerprint_tells_a_trained_weight_from_an_untouched_one():
    """params_changed compares small per-tensor checksums, not a CPU copy of the model."""
    from tfgrpo.params.model import fingerprint, load_policy

    model, _ = load_policy("tiny", seed=1)
    before = fingerprint(model)
    assert all(isinstance(v, tuple) and all(isinstance(x, float) for x in v) for v in before.values())
    assert fingerprint(model) == before
    with torch.no_grad():
        model.get_parameter("model.norm.weight")[3] += 1e-3
    after = fingerprint(model)
    changed = [n for n in before if before[n] != after[n]]
    assert changed == ["model.norm.weight"]


def test_prefix_sharing_takes_auto_packed_or_naive():
    from tfgrpo.errors import UserError

    assert make_config().prefix_sharing == "auto"
    assert make_config(prefix_sharing="naive").prefix_sharing == "naive"
    with pytest.raises(UserError, match="prefix.sharing"):
        make_config(prefix_sharing="sometimes")


def test_resume_runs_in_its_own_directory_from_anywhere(tmp_path, monkeypatch):
    first = run(quick(steps=2, save_every=1), out=tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    resumed = run(quick(steps=3), resume=str(tmp_path / "run"))  # no out: the run directory comes from resume
    assert resumed.run_dir == tmp_path / "run" and list(elsewhere.iterdir()) == []
    assert resumed.reward_by_step[:2] == first.reward_by_step
    with pytest.raises(UserError, match="continues .* in place; --out .* would write elsewhere"):
        run(quick(steps=4), out=tmp_path / "other" / "run", resume=str(tmp_path / "run"))
    with pytest.raises(UserError, match=r"resume needs the run directory \(out=...\)"):
        run(quick(steps=4), resume=True)


def test_resume_refuses_settings_that_would_make_another_run(tmp_path):
    run(quick(steps=2), out=tmp_path / "run")
    for change, flag in [
        ({"lr": 0.5}, "--lr"),
        ({"weight_decay": 0.1}, "--weight-decay"),
        ({"seed": 7}, "--seed"),
        ({"beta": 0.1}, "--beta"),
        ({"task": "toy", "group_size": 2}, "--group-size"),
    ]:
        with pytest.raises(UserError, match=f"cannot change {flag} "):
            run(quick(steps=3, **change), out=tmp_path / "run", resume=True)
    assert len((tmp_path / "run" / "steps.jsonl").read_text().splitlines()) == 2  # nothing touched
    allowed = run(quick(steps=3, save_every=1, micro_batch_groups=1), out=tmp_path / "run", resume=True)
    assert len(allowed.reward_by_step) == 3


def test_a_run_stopped_before_its_first_checkpoint_runs_again_from_step_one(tmp_path, monkeypatch):
    import shutil

    from tfgrpo.params.generate import HFGenerator

    full = run(quick(steps=2), out=tmp_path / "full")
    run(quick(steps=2), out=tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # as a kill before the end leaves it with --save-every 0
    notices = []
    resumed = run(quick(steps=2), out=tmp_path / "run", resume=True, hooks=Hooks(on_notice=notices.append))
    assert resumed.reward_by_step == full.reward_by_step and resumed.resumed_from == 0
    assert any("no checkpoint in" in n and "running it again from step 1" in n for n in notices)
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()] == [1, 2]
    # a resume from a checkpoint hands the loaded weights to the sampler before the first step
    synced = []
    monkeypatch.setattr(HFGenerator, "sync_weights", lambda self, model: synced.append(model))
    run(quick(steps=3), out=tmp_path / "run", resume=True)
    assert len(synced) >= 2  # once on resume, once after the step's update


def test_checkpoints_of_an_abandoned_branch_are_set_aside_and_a_damaged_one_skipped(tmp_path):
    run(quick(steps=3, save_every=1), out=tmp_path / "run")
    ckpts = tmp_path / "run" / "checkpoints"
    notices = []
    run(quick(steps=2, save_every=1), resume=ckpts / "step-000001", hooks=Hooks(on_notice=notices.append))
    assert sum("set aside as abandoned-step-" in n for n in notices) == 2
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000001", "step-000002"]
    assert sorted(p.name[: len("abandoned-step-000002")] for p in ckpts.glob("abandoned-*")) == [
        "abandoned-step-000002",
        "abandoned-step-000003",
    ]
    (ckpts / "step-000002" / "state.json").write_text("")  # a torn write
    assert latest_checkpoint(tmp_path / "run").name == "step-000001"
    notices = []
    resumed = run(
        quick(steps=3, save_every=1), out=tmp_path / "run", resume=True, hooks=Hooks(on_notice=notices.append)
    )
    assert len(resumed.reward_by_step) == 3
    assert any("step-000002" in n and "trying the one before" in n for n in notices)  # the damaged one, as a notice
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not list(ckpts.glob("*.partial")) and not list(ckpts.glob("*.old"))


def test_train_params_has_the_api_shape_of_train(tmp_path, capfd):
    """A result object, progress through the hooks only, ``out`` an argument, nothing printed."""
    import tfgrpo
    from tfgrpo.params import ParamsResult

    capfd.readouterr()
    seen: dict[str, list] = {"phase": [], "advance": [], "step": [], "notice": []}
    hooks = Hooks(
        on_phase=lambda phase, total: seen["phase"].append((phase, total)),
        on_advance=seen["advance"].append,
        on_step=seen["step"].append,
        on_notice=seen["notice"].append,
    )
    result = tfgrpo.train_params(
        {
            "task": "toy",
            "model": "tiny",
            "steps": 2,
            "batch_size": 2,
            "group_size": 2,
            "device": "cpu",
            "prefix_sharing": "packed",
        },
        out=tmp_path / "run",
        hooks=hooks,
    )
    printed = capfd.readouterr()
    assert printed.out == "" and printed.err == ""
    assert isinstance(result, ParamsResult) and result.run_dir == tmp_path / "run" and result.status == "finished"
    assert seen["phase"] == [("GRPO steps", 2)] and seen["advance"] == ["steps", "steps"]
    assert seen["step"] == result.steps and [s["step"] for s in result.steps] == [1, 2]
    assert any(n.startswith("training forward: packed") for n in seen["notice"])
    summary = result.summary()
    assert {
        "steps",
        "reward_by_step",
        "run_dir",
        "final_checkpoint",
        "final_model",
        "params_changed",
        "loss",
        "model",
        "device",
        "processes",
        "wall_s",
        "metrics",
        "status",
        "resumed_from_step",
    } == summary.keys()
    assert summary["steps"] == 2 and summary["run_dir"] == str(tmp_path / "run") and summary["status"] == "finished"
    assert json.loads(json.dumps(summary)) == summary
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "finished"
    assert "out" not in (tmp_path / "run" / "config.yaml").read_text()  # where a run went is no setting of it


def test_out_is_an_argument_not_a_setting(tmp_path):
    with pytest.raises(
        UserError, match=r"out is the run directory, not a setting: pass it as train_params\(cfg, out=...\)"
    ):
        make_config(out=str(tmp_path))


def test_cli_reads_the_out_of_earlier_config_files(tmp_path):
    """config.yaml of runs before ``out`` became an argument records it: a resume reads past it, and
    a --config file naming it puts the run there, as --out would (and --out overrides it)."""
    import yaml
    from typer.testing import CliRunner

    from tfgrpo.cli import build_app

    old = tmp_path / "old"
    run(quick(steps=1, batch_size=2, group_size=2), out=old)
    data = yaml.safe_load((old / "config.yaml").read_text())
    (old / "config.yaml").write_text(yaml.safe_dump({**data, "out": str(old)}))  # as earlier versions wrote it
    cli = CliRunner()
    got = cli.invoke(build_app(), ["grpo", "--resume", str(old), "--steps", "2", "--json", "--quiet"])
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout.strip().splitlines()[-1])["steps"] == 2
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({**data, "out": str(tmp_path / "from-file")}))
    got = cli.invoke(build_app(), ["grpo", "--config", str(conf), "--json", "--quiet"])
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout.strip().splitlines()[-1])["run_dir"] == str(tmp_path / "from-file")
    got = cli.invoke(build_app(), ["grpo", "--config", str(conf), "--out", str(tmp_path / "flag"), "--json", "--quiet"])
    assert json.loads(got.stdout.strip().splitlines()[-1])["run_dir"] == str(tmp_path / "flag")
