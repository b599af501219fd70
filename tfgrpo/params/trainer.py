"""The parameter-mode loop: sample groups, score them, GRPO-update the weights.

One step: take ``batch_size`` prompts; sample G responses each (vLLM or HF generate); score
them with the task's rewards; with dynamic sampling drop groups whose rewards are all equal
and refill from further prompts; advantages from ``group_advantages``; then
``updates_per_batch`` passes of micro-batches of whole groups through the packed forward
(prompt once per group; ``prefix.py``, naive when prompts are too short for it to pay), the chosen loss (``losses.py``) normalised over the whole
batch, one AdamW step. Runs single-process (CPU or one GPU) or under ``accelerate launch`` /
torchrun (DDP, or FSDP from the accelerate config): the forward is one ``GroupScorer`` module
call per micro-batch, so the wrapper sees one forward per backward.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from tfgrpo.errors import UserError
from tfgrpo.hooks import Hooks
from tfgrpo.params.checkpoint import latest_checkpoint, load_checkpoint, run_directory, set_aside_after
from tfgrpo.params.config import ParamsConfig
from tfgrpo.params.metrics import StepStats, mean, std
from tfgrpo.params.model import no_progress_bars
from tfgrpo.params.result import ParamsResult
from tfgrpo.rewards import group_advantages
from tfgrpo.rundir import STEPS, RunDir
from tfgrpo.task_registry import Task, load_task
from tfgrpo.tracking import parse_report_to, trackers

MAX_REFILLS = 4  # dynamic sampling: at most this many extra draws of batch_size prompts


def train_weights(
    cfg: ParamsConfig, *, out: str | Path | None = None, resume: bool | str | Path = False, hooks: Hooks | None = None
) -> ParamsResult:
    """The run behind :func:`tfgrpo.params.train_params` (which documents ``out`` and ``resume``)."""
    started = time.monotonic()  # wall time includes loading the model, as the training-free mode's includes its set-up
    hooks = hooks or Hooks()
    path, source = run_directory(cfg, out, resume)
    task = load_task(cfg.task, **({"data": cfg.data} if cfg.data else {}))
    try:
        import torch
    except ImportError:
        raise UserError("parameter mode needs torch: pip install 'tfgrpo[train]'") from None
    device = resolve_device(cfg.device)
    rd = RunDir(path)
    try:
        # One trainer per run directory (the main process of a multi-process launch holds the lock);
        # SIGTERM / Ctrl-C leave status.json saying interrupted.
        with rd.create().locked() if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext(), \
                rd.interrupts_marked("params"), no_progress_bars():  # fmt: skip
            result = _Run(cfg, task, device, rd, hooks).loop(str(source) if source is not None else None)
            result.wall_s = time.monotonic() - started
            return result
    except torch.cuda.OutOfMemoryError:
        raise UserError(
            "CUDA out of memory: lower --micro-batch-groups "
            f"({cfg.micro_batch_groups}), --max-tokens ({cfg.max_tokens}), --max-prompt-len "
            f"({cfg.max_prompt_len}) or --group-size ({cfg.group_size}); or use --lora-r / --gradient-checkpointing"
        ) from None


def resolve_device(want: str) -> str:
    import torch

    if want == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "--device cuda asked but no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES, or use --device cpu)"
        )
    if want == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return want


def _scorer_class():
    import torch

    from tfgrpo.params.prefix import group_logprobs

    class GroupScorer(torch.nn.Module):
        """The policy behind one forward per micro-batch (what DDP/FSDP wrap); ``mode`` is
        ``packed`` or ``naive``, decided per micro-batch by the caller."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, groups, mode: str):
            return group_logprobs(self.model, groups, mode=mode, with_entropy=True)

    return GroupScorer


class _Run:
    def __init__(self, cfg: ParamsConfig, task: Task, device: str, rd: RunDir, hooks: Hooks):
        import torch
        from accelerate import Accelerator

        from tfgrpo.params.generate import make_generator
        from tfgrpo.params.model import fingerprint, load_policy

        self.cfg, self.task, self.hooks = cfg, task, hooks
        self.prefix_sharing = cfg.prefix_sharing  # auto | packed | naive
        self.forward_modes: list[str] = []
        self.max_len = min(cfg.max_tokens, task.max_tokens) if task.max_tokens else cfg.max_tokens
        self.overlong = cfg.overlong if cfg.overlong < self.max_len else 0
        self.acc = Accelerator(cpu=device == "cpu")
        self.rd = rd
        self.run_dir = rd.path
        torch.manual_seed(cfg.seed)
        model, self.tokenizer = load_policy(
            cfg.model,
            seed=cfg.seed,
            dtype=cfg.dtype,
            lora_r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        self.initial = fingerprint(model)
        self.reference = self._reference(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scorer, self.optimizer = self.acc.prepare(_scorer_class()(model), optimizer)
        self.generator = make_generator(
            cfg.generator,
            self.policy,
            self.tokenizer,
            model_name=cfg.model,
            device=self.acc.device.type,
            max_new_tokens=self.max_len,
            temperature=cfg.temperature,
            seed=cfg.seed,
        )

    @property
    def policy(self):
        return self.acc.unwrap_model(self.scorer).model

    def _reference(self, model):
        """Frozen initial policy for the KL term (beta > 0); with LoRA the adapters are switched
        off instead of keeping a copy."""
        if not self.cfg.beta or self.cfg.lora_r:
            return None
        import copy

        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    # -- the loop ---------------------------------------------------------------------------

    def loop(self, resume: str | None) -> ParamsResult:
        """Steps from the start (or after ``resume``'s newest checkpoint) to ``cfg.steps``;
        progress and notices go to the hooks, on the main process only."""
        from tfgrpo.params.rollout import SampleOrder

        self.rd.create()
        state: dict[str, Any] = {"step": 0, "cursor": 0, "reward_by_step": []}
        if resume:
            ckpt = latest_checkpoint(resume, warn=self._notice)
            if ckpt is None:
                self._notice(
                    f"no checkpoint in {resume} yet (--save-every {self.cfg.save_every}): running it again from step 1"
                )
            else:
                state = load_checkpoint(ckpt, self.policy, self.optimizer)
                self.generator.sync_weights(self.policy)  # a sampler with its own copy (vLLM) samples from these
                self._notice(f"resumed from {ckpt} at step {state['step']}")
        done, main = state["step"], self.acc.is_main_process
        # the result holds a resumed run's earlier steps too, as steps.jsonl does
        earlier = (
            [r for r in self.rd.read(STEPS) if isinstance(r.get("step"), int) and r["step"] <= done] if done else []
        )
        if main:
            # The effective values (tiny's learning rate included), so config.yaml re-runs as is.
            self.rd.write_config(self.cfg.model_copy(update={"lr": self.cfg.learning_rate}))
            self.rd.discard_after(state["step"])  # steps after the checkpoint are redone
            for moved in set_aside_after(self.run_dir, state["step"]):
                self._notice(
                    f"checkpoint after step {state['step']} set aside as {moved.name} (not on this run's path)"
                )
        self._status("running", state["step"])
        order = SampleOrder(self.task.dataset, self.cfg.seed, state["cursor"])
        rewards: list[float | None] = list(state["reward_by_step"])
        rows: list[dict[str, Any]] = list(earlier)
        last_ckpt = None
        kinds = parse_report_to(self.cfg.report_to) if main else []
        if main:
            self.hooks.on_phase("GRPO steps", max(0, self.cfg.steps - state["step"]))
        with trackers(kinds, self.run_dir, self.cfg.model_dump(mode="json")) as track:
            for step in range(state["step"] + 1, self.cfg.steps + 1):
                metrics = self.step(step, order)
                rewards.append(metrics["reward_mean"])
                rows.append(metrics)
                if main:
                    self.rd.append(STEPS, [metrics])
                track(step, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"})
                if step == self.cfg.steps or (self.cfg.save_every and step % self.cfg.save_every == 0):
                    last_ckpt = self.save(step, order.cursor, rewards)
                if main:  # the step is on disk (and checkpointed when due) before it is reported
                    self.hooks.on_step(metrics)
                    self.hooks.on_advance("steps")
        final = self.export()
        self._status("finished", self.cfg.steps)
        return ParamsResult(
            run_dir=self.run_dir,
            steps=rows,
            status="finished",
            wall_s=0.0,
            steps_planned=self.cfg.steps,
            model=self.cfg.model,
            loss=self.cfg.loss,
            device=self.acc.device.type,
            processes=self.acc.num_processes,
            params_changed=self._params_changed(),
            final_model=final,
            final_checkpoint=last_ckpt,
            resumed_from=state["step"],
        )

    def step(self, step: int, order) -> dict[str, Any]:
        import torch

        from tfgrpo.params.rollout import keep_informative, reward_weights

        cfg = self.cfg
        torch.manual_seed(cfg.seed * 7919 + step * 31 + self.acc.process_index)
        weights = reward_weights(self.task, self.overlong)
        t0 = time.perf_counter()
        drawn = self._draw(order)
        first = list(drawn)
        kept = keep_informative(drawn, weights) if cfg.use_dynamic_sampling else drawn
        refills = 0
        # every decision that changes the number of collectives is taken on all processes' counts
        while cfg.use_dynamic_sampling and refills < MAX_REFILLS and min(self._everyone(len(kept))) < cfg.batch_size:
            more = self._draw(order)
            drawn += more
            kept += keep_informative(more, weights)
            refills += 1
        kept = kept[: min(self._everyone(min(len(kept), cfg.batch_size)))]
        gen_s = time.perf_counter() - t0
        first_rewards = [r for g in first for r in g.combined]
        all_rewards = [r for rank in self._everyone(first_rewards) for r in rank]
        task_rewards = [r for r in all_rewards if r is not None]
        metrics: dict[str, Any] = {
            "step": step,
            "reward_mean": mean(task_rewards),
            "reward_std": std(task_rewards),
            "reward_missing": len(all_rewards) - len(task_rewards),
            "groups_sampled": sum(self._everyone(len(drawn))),
            "groups_trained": sum(self._everyone(len(kept))),
            "gen_tokens": sum(len(r) for g in drawn for r in g.responses),
            "gen_s": round(gen_s, 3),
        }
        t1 = time.perf_counter()
        if kept:
            metrics.update(self.update(kept, weights))
            self.generator.sync_weights(self.policy)
        train_s = time.perf_counter() - t1
        metrics["train_s"] = round(train_s, 3)
        metrics["tokens_per_s"] = round((metrics["gen_tokens"] + metrics.get("train_tokens", 0)) / (gen_s + train_s), 1)
        return metrics

    def _draw(self, order):
        from tfgrpo.params.rollout import sample_groups, score_groups

        world, rank = self.acc.num_processes, self.acc.process_index
        samples = order.take(self.cfg.batch_size * world)[rank::world]  # each process its own prompts
        with self._full_params():
            groups = sample_groups(
                self.generator,
                self.tokenizer,
                self.task,
                samples,
                group_size=self.cfg.group_size,
                max_prompt_len=self.cfg.max_prompt_len,
            )
        score_groups(self.task, groups, max_len=self.max_len, overlong_buffer=self.overlong)
        return groups

    # -- the update -------------------------------------------------------------------------

    def update(self, groups, weights) -> dict[str, Any]:
        import torch

        from tfgrpo.params import losses

        cfg = self.cfg
        eps_low, eps_high = cfg.clip_range
        loss_name = cfg.effective_loss
        adv = group_advantages([g.rewards for g in groups], weights, mode=cfg.advantage_mode)
        tensors = [self._tensors(g, a) for g, a in zip(groups, adv)]
        micro = [tensors[i : i + cfg.micro_batch_groups] for i in range(0, len(tensors), cfg.micro_batch_groups)]
        # all losses' normalisers add up over processes; DDP averages gradients, hence / world
        local = losses.loss_denominator(loss_name, [t.mask for t in tensors], max_len=self.max_len)
        denom = sum(self._everyone(local)) / self.acc.num_processes
        modes = self._forward_modes(micro)
        old = self._old_logprobs(micro, modes) if cfg.updates_per_batch > 1 else None
        ref = self._ref_logprobs(micro, modes) if cfg.beta else None
        stats = StepStats()
        for _ in range(cfg.updates_per_batch):
            for k, mb in enumerate(micro):
                sync = contextlib.nullcontext() if k == len(micro) - 1 else self.acc.no_sync(self.scorer)
                with sync:
                    outs = self.scorer(mb, modes[k])
                    total = 0.0
                    for j, (t, (logp, entropy)) in enumerate(zip(mb, outs)):
                        old_lp = old[k][j] if old is not None else logp.detach()
                        ref_lp = ref[k][j] if ref is not None else None
                        mask = t.mask.to(logp.dtype)
                        total = total + losses.policy_loss(
                            loss_name,
                            logp,
                            old_lp,
                            t.advantages,
                            mask,
                            eps_low=eps_low,
                            eps_high=eps_high,
                            max_len=self.max_len,
                            ref_logp=ref_lp,
                            beta=cfg.beta,
                            denominator=denom,
                        )
                        stats.add(logp, old_lp, ref_lp, entropy, t, mask, eps_low, eps_high, loss_name == "gspo")
                    self.acc.backward(total)
                    stats.loss += float(total.detach())
            grad_norm = self.acc.clip_grad_norm_(self.scorer.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        out = stats.summary(cfg.updates_per_batch)
        out["forward"] = ", ".join(f"{m} {modes.count(m)}" for m in sorted(set(modes)))
        out["grad_norm"] = round(float(grad_norm), 4) if grad_norm is not None else None
        return out

    def _params_changed(self) -> bool:
        from tfgrpo.params.model import fingerprint

        with self._full_params():
            return fingerprint(self.policy) != self.initial

    def _full_params(self):
        """Under FSDP, gather the sharded weights for generation and saving; otherwise nothing."""
        from accelerate.utils import DistributedType

        if self.acc.distributed_type != DistributedType.FSDP:
            return contextlib.nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel.summon_full_params(self.scorer, writeback=False)

    def _everyone(self, value) -> list:
        """``value`` from every process (a one-element list when running alone)."""
        if self.acc.num_processes == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def _tensors(self, group, advantages):
        import torch

        from tfgrpo.params.prefix import GroupTokens

        dev = self.acc.device
        width = max(1, max(len(r) for r in group.responses))
        pad = self.tokenizer.pad_token_id
        responses = torch.full((len(group.responses), width), pad, dtype=torch.long)
        mask = torch.zeros_like(responses)
        for i, r in enumerate(group.responses):
            responses[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
        return GroupTokens(
            torch.tensor(group.prompt, dtype=torch.long, device=dev),
            responses.to(dev),
            mask.to(dev),
            torch.tensor(advantages, dtype=torch.float32, device=dev),
        )

    def _forward_modes(self, micro) -> list[str]:
        """Packed or naive forward per micro-batch (``prefix_sharing`` auto decides by token
        count); a change of the choice is logged."""
        from tfgrpo.params.prefix import choose_mode, token_counts

        modes = [choose_mode(self.prefix_sharing, mb) for mb in micro]
        if sorted(set(modes)) != self.forward_modes:
            naive, packed = map(sum, zip(*(token_counts(mb) for mb in micro)))
            self._notice(
                f"training forward: {' + '.join(sorted(set(modes)))} (prefix sharing {self.prefix_sharing}; "
                f"{naive} tokens naive, {packed} packed)"
            )
            self.forward_modes = sorted(set(modes))
        return modes

    def _old_logprobs(self, micro, modes):
        import torch

        with torch.no_grad():
            return [[lp.detach() for lp, _ in self.scorer(mb, m)] for mb, m in zip(micro, modes)]

    def _ref_logprobs(self, micro, modes):
        import torch

        from tfgrpo.params.prefix import group_logprobs

        with torch.no_grad():
            if self.reference is not None:
                return [group_logprobs(self.reference, mb, mode=m) for mb, m in zip(micro, modes)]
            with self.policy.disable_adapter():  # LoRA: the base model is the reference
                return [group_logprobs(self.policy, mb, mode=m) for mb, m in zip(micro, modes)]

    # -- persistence and output -------------------------------------------------------------

    def save(self, step: int, cursor: int, rewards: list) -> Path | None:
        from tfgrpo.params.checkpoint import checkpoint_dir, save_checkpoint

        path = checkpoint_dir(self.run_dir, step)
        with self._full_params():
            if self.acc.is_main_process:
                save_checkpoint(
                    path, self.policy, self.optimizer, {"step": step, "cursor": cursor, "reward_by_step": rewards}
                )
        self.acc.wait_for_everyone()
        return path

    def export(self) -> Path:
        from tfgrpo.params.model import save_pretrained

        path = self.rd.final_model_path
        with self._full_params():
            if self.acc.is_main_process:
                save_pretrained(self.policy, self.tokenizer, path)
        self.acc.wait_for_everyone()
        return path

    def _status(self, status: str, steps_done: int) -> None:
        if self.acc.is_main_process:
            self.rd.write_status("params", status, steps_done=steps_done, steps_planned=self.cfg.steps)

    def _notice(self, line: str) -> None:
        if self.acc.is_main_process:
            self.hooks.on_notice(line)
