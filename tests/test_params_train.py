"""Parameter mode end to end on CPU: the tiny model learns the toy task by GRPO."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tfgrpo.errors import UserError  # noqa: E402
from tfgrpo.params import make_config  # noqa: E402
from tfgrpo.params import train_params as run  # noqa: E402
from tfgrpo.params.checkpoint import latest_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def quick(tmp_path, **kw):
    values = dict(task="toy", model="tiny", out=str(tmp_path / "run"), steps=3, batch_size=4, group_size=4,
                  device="cpu")
    values.update(kw)
    return make_config(**values)


def test_tiny_model_learns_toy_task(tmp_path):
    summary = run(make_config(task="toy", model="tiny", out=str(tmp_path / "run"), steps=60, device="cpu"),
                  progress=False)
    r = summary["reward_by_step"]
    assert summary["params_changed"]
    assert len(r) == 60
    first, last = sum(r[:5]) / 5, sum(r[-5:]) / 5
    assert first < 0.1 and last > first + 0.2, r
    lines = (tmp_path / "run" / "steps.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    for key in ("reward_mean", "reward_std", "kl", "clip_fraction", "entropy", "tokens_per_s", "loss"):
        assert key in rec
    assert Path(summary["final_checkpoint"], "model.safetensors").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "gspo"])
def test_every_loss_trains(tmp_path, loss):
    summary = run(quick(tmp_path, loss=loss, beta=0.05), progress=False)
    assert summary["params_changed"]
    rec = json.loads((tmp_path / "run" / "steps.jsonl").read_text().splitlines()[-1])
    assert rec["kl"] is not None and rec["kl"] >= 0


def test_packed_and_naive_forward_train_identically(tmp_path):
    a = run(quick(tmp_path / "a", prefix_sharing="packed"), progress=False)
    b = run(quick(tmp_path / "b", prefix_sharing="naive"), progress=False)
    assert a["reward_by_step"] == b["reward_by_step"]
    fwd = [json.loads(x)["forward"] for x in (tmp_path / "a" / "run" / "steps.jsonl").read_text().splitlines()]
    assert fwd and all(f.startswith("packed") for f in fwd)
    from safetensors.torch import load_file

    wa = load_file(str(Path(a["final_checkpoint"]) / "model.safetensors"))
    wb = load_file(str(Path(b["final_checkpoint"]) / "model.safetensors"))
    for name in wa:
        # Adam divides by sqrt(v): float32 rounding in a near-zero gradient can move that weight by
        # ~1e-5, under 1% of one Adam step (lr 3e-3 per element and step)
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=3e-5)


def test_resume_continues_where_it_stopped(tmp_path):
    full = run(quick(tmp_path / "full", steps=4, save_every=2), progress=False)
    part = run(quick(tmp_path / "part", steps=2), progress=False)
    resumed = run(quick(tmp_path / "part", steps=4), resume=str(tmp_path / "part" / "run"), progress=False)
    assert resumed["reward_by_step"][:2] == part["reward_by_step"]
    assert resumed["reward_by_step"] == full["reward_by_step"]
    assert latest_checkpoint(tmp_path / "part" / "run").name == "step-000004"
    assert len((tmp_path / "part" / "run" / "steps.jsonl").read_text().splitlines()) == 4


def test_lora_trains_only_adapters(tmp_path):
    summary = run(quick(tmp_path, lora_r=4, beta=0.1), progress=False)
    assert summary["params_changed"]
    from safetensors.torch import load_file

    names = list(load_file(str(Path(summary["final_checkpoint"]) / "model.safetensors")))
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
    summary = run(quick(tmp_path, task=f"{task_file}:flaky_task", steps=2), progress=False)
    recs = [json.loads(x) for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and summary["steps"] == 2
    assert sum(r["reward_missing"] for r in recs) > 0


def test_model_loads_from_local_directory(tmp_path):
    from tfgrpo.params.model import load_policy, save_pretrained

    model, tok = load_policy("tiny", seed=3)
    save_pretrained(model, tok, tmp_path / "tiny-model")
    loaded, tok2 = load_policy(str(tmp_path / "tiny-model"), dtype="float32")
    assert tok2("echo a:")["input_ids"] == tok("echo a:")["input_ids"]
    for (n, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters()):
        torch.testing.assert_close(p, q)
    summary = run(quick(tmp_path, model=str(tmp_path / "tiny-model"), lr=1e-3, steps=2), progress=False)
    assert summary["params_changed"]


@pytest.mark.parametrize("bad, words", [
    (dict(loss="ppo"), "unknown loss"),
    (dict(loss="gspo", token_level=True), "gspo"),
    (dict(loss="dr_grpo", token_level=True), "dr_grpo"),
    (dict(group_size=1), "group-size"),
])
def test_bad_options_are_one_line_errors(tmp_path, bad, words):
    with pytest.raises(UserError, match=words) as e:
        make_config(out=str(tmp_path), **bad)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no CUDA GPU"):
        run(quick(tmp_path, device="cuda"), progress=False)
    assert not (tmp_path / "run").exists()  # failed before anything was written or loaded


def test_importing_tfgrpo_params_does_not_import_torch():
    code = "import sys, tfgrpo, tfgrpo.params, tfgrpo.params.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_module_entry_prints_json_last_line(tmp_path):
    cmd = [sys.executable, "-m", "tfgrpo.params", "--task", "toy", "--model", "tiny", "--steps", "2",
           "--batch-size", "2", "--group-size", "4", "--device", "cpu", "--out", str(tmp_path / "r"), "--json"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(summary["reward_by_step"]) == 2 and summary["run_dir"] == str(tmp_path / "r")
    bad = subprocess.run(cmd[:3] + ["--loss", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "unknown loss" in bad.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step(tmp_path):
    summary = run(quick(tmp_path, device="cuda", generator="hf"), progress=False)
    assert summary["device"] == "cuda" and summary["params_changed"]


@pytest.mark.slow
def test_two_processes_with_torchrun(tmp_path):
    """DDP on CPU (gloo): processes take different prompts and agree on every collective."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tfgrpo.params",
           "--task", "toy", "--model", "tiny", "--steps", "3", "--batch-size", "2", "--group-size", "4",
           "--device", "cpu", "--out", str(tmp_path / "ddp"), "--json", "--quiet"]
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
    first = run(quick(tmp_path, steps=2, save_every=1), progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = quick(tmp_path, steps=3)
    cfg.out = None  # as the CLI leaves it: the run directory comes from --resume
    resumed = run(cfg, resume=str(tmp_path / "run"), progress=False)
    assert resumed["run_dir"] == str(tmp_path / "run") and list(elsewhere.iterdir()) == []
    assert resumed["reward_by_step"][:2] == first["reward_by_step"]
    with pytest.raises(UserError, match="continues .* in place; --out .* would write elsewhere"):
        run(quick(tmp_path / "other", steps=4), resume=str(tmp_path / "run"), progress=False)


def test_resume_refuses_settings_that_would_make_another_run(tmp_path):
    run(quick(tmp_path, steps=2), progress=False)
    for change, flag in [({"lr": 0.5}, "--lr"), ({"weight_decay": 0.1}, "--weight-decay"), ({"seed": 7}, "--seed"),
                         ({"beta": 0.1}, "--beta"), ({"task": "toy", "group_size": 2}, "--group-size")]:
        with pytest.raises(UserError, match=f"cannot change {flag} "):
            run(quick(tmp_path, steps=3, **change), resume=str(tmp_path / "run"), progress=False)
    assert len((tmp_path / "run" / "steps.jsonl").read_text().splitlines()) == 2  # nothing touched
    allowed = run(quick(tmp_path, steps=3, save_every=1, micro_batch_groups=1), resume=str(tmp_path / "run"), progress=False)
    assert len(allowed["reward_by_step"]) == 3


def test_a_run_stopped_before_its_first_checkpoint_runs_again_from_step_one(tmp_path, monkeypatch):
    import shutil

    from tfgrpo.params.generate import HFGenerator

    full = run(quick(tmp_path / "full", steps=2), progress=False)
    run(quick(tmp_path, steps=2), progress=False)
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # as a kill before the end leaves it with --save-every 0
    resumed = run(quick(tmp_path, steps=2), resume=str(tmp_path / "run"), progress=False)
    assert resumed["reward_by_step"] == full["reward_by_step"]
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()] == [1, 2]
    # a resume from a checkpoint hands the loaded weights to the sampler before the first step
    synced = []
    monkeypatch.setattr(HFGenerator, "sync_weights", lambda self, model: synced.append(model))
    run(quick(tmp_path, steps=3), resume=str(tmp_path / "run"), progress=False)
    assert len(synced) >= 2  # once on resume, once after the step's update


def test_checkpoints_of_an_abandoned_branch_are_set_aside_and_a_damaged_one_skipped(tmp_path):
    run(quick(tmp_path, steps=3, save_every=1), progress=False)
    ckpts = tmp_path / "run" / "checkpoints"
    run(quick(tmp_path, steps=2, save_every=1), resume=str(ckpts / "step-000001"), progress=False)
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-000001", "step-000002"]
    assert sorted(p.name[:len("abandoned-step-000002")] for p in ckpts.glob("abandoned-*")) == [
        "abandoned-step-000002", "abandoned-step-000003"]
    (ckpts / "step-000002" / "state.json").write_text("")  # a torn write
    assert latest_checkpoint(tmp_path / "run").name == "step-000001"
    resumed = run(quick(tmp_path, steps=3, save_every=1), resume=str(tmp_path / "run"), progress=False)
    assert len(resumed["reward_by_step"]) == 3
    assert [json.loads(x)["step"] for x in (tmp_path / "run" / "steps.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not list(ckpts.glob("*.partial")) and not list(ckpts.glob("*.old"))
