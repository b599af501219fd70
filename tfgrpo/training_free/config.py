"""Configuration of the training-free mode: small nested pydantic models, one per component.

The CLI generates its flags from the fields that carry ``flag(...)``; a YAML file
(``--config``) gives the same settings by their nested names. ``config.yaml`` in a run
directory is the resolved config, enough to re-run. ``SamplingConfig`` (group size,
temperature, completion tokens, seed, agent limits) travels whole from the flag to the
request; injection settings are experience_store's own model, embedded in ``LibraryConfig``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from experience_store import InjectionSettings
from tfgrpo.config import ConfigModel as _Model
from tfgrpo.config import build, flag, load_yaml
from tfgrpo.rundir import CONFIG
from tfgrpo.llm.endpoint_config import JudgeConfig, PolicyConfig


def absolute_task(spec: Any) -> Any:
    """``tasks.py:name`` -> ``/abs/tasks.py:name``, so a run re-runs and resumes from any directory."""
    if isinstance(spec, str):
        head, _, name = spec.rpartition(":")
        if head.endswith(".py"):
            return f"{Path(head).expanduser().resolve()}:{name}"
    return spec


def absolute_data(data: Any) -> Any:
    """A local data file becomes an absolute path (a dataset id stays as it is)."""
    if isinstance(data, str) and Path(data).expanduser().exists():
        return str(Path(data).expanduser().resolve())
    return data


class _Paths(_Model):
    """Task files and data files are stored absolute."""

    @field_validator("task", mode="before", check_fields=False)
    @classmethod
    def _abs_task(cls, v: Any) -> Any:
        return absolute_task(v)

    @field_validator("data", mode="before", check_fields=False)
    @classmethod
    def _abs_data(cls, v: Any) -> Any:
        return absolute_data(v)


class AgentConfig(_Model):
    """Limits of one tool-calling rollout (tasks with tools); a rollout hitting one is scored as it stands."""

    max_turns: int = Field(
        8, gt=0, description="Most model turns per tool-calling rollout", json_schema_extra=flag("max-turns")
    )
    max_tokens: int = Field(
        4096,
        gt=0,
        description="Most completion tokens per tool-calling rollout, over all its turns",
        json_schema_extra=flag("agent-max-tokens"),
    )
    wall_s: float = Field(
        300.0,
        gt=0,
        description="Most seconds per tool-calling rollout, tool calls included (an --agent program is killed after it)",
        json_schema_extra=flag("agent-wall-s"),
    )
    processes: int = Field(
        8,
        gt=0,
        description="Most --agent rollouts running at once (processes, or calls of a task's agent function)",
        json_schema_extra=flag("agent-processes"),
    )


class AnswerSampling(_Model):
    """How each answer is sampled: what evaluation takes from its flags (answers per problem are
    its -n; agent limits are its run's)."""

    temperature: float = Field(
        0.7, ge=0, le=2, description="Sampling temperature of rollouts", json_schema_extra=flag("temperature")
    )
    max_tokens: int | None = Field(
        None,
        gt=0,
        description="Max completion tokens per answer (default: the task's, else the backend's)",
        json_schema_extra=flag("max-tokens"),
    )
    seed: int = Field(0, description="Seed for shuffling and sampling", json_schema_extra=flag("seed"))


class SamplingConfig(AnswerSampling):
    """How answers are sampled: passed whole from the flags to every rollout, in training,
    validation and evaluation alike."""

    group_size: int = Field(
        5, gt=0, le=256, description="Answers sampled per query (G, at most 256)", json_schema_extra=flag("group-size")
    )
    agent: AgentConfig = Field(default_factory=AgentConfig)


class LibraryConfig(_Model):
    injection: InjectionSettings = Field(default_factory=InjectionSettings)
    embedding: dict[str, Any] = Field(
        default_factory=lambda: {"name": "lexical", "dim": 512},
        description="Embedding stored with the library: lexical (offline), e5 (multilingual-e5-small, offline: the [e5] extra), chroma-default, st:MODEL_OR_PATH (sentence-transformers) or litellm:MODEL",
        json_schema_extra=flag("embedding"),
    )
    dedup_threshold: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Cosine similarity above which a proposed lesson is handed to consolidation as a MERGE candidate",
        json_schema_extra=flag("dedup-threshold"),
    )
    prune_unused_steps: int = Field(
        0,
        ge=0,
        description="Retire lessons not cited for this many steps (0: never)",
        json_schema_extra=flag("prune-unused"),
    )
    prune_min_votes: int = Field(
        12,
        ge=1,
        description="Within-group comparisons (citing vs non-citing answers) needed before a lesson can be retired as harmful",
    )
    prune_harmful_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of lost within-group comparisons above which a lesson is retired (with --prune-harmful)",
    )
    store: str | None = Field(
        None,
        description="Chroma server http://host:port shared by several writers (default: a local index in the run directory)",
        json_schema_extra=flag("store"),
    )
    collection: str | None = Field(
        None,
        description="Collection name on the --store server (default: the run directory's name)",
        json_schema_extra=flag("store-collection"),
    )
    prune_harmful: bool = Field(
        False,
        description="Retire lessons that lose the within-group comparisons (answers citing the lesson against answers shown it that did not cite it): at least prune_min_votes comparisons, more than prune_harmful_share lost",
        json_schema_extra=flag("prune-harmful"),
    )

    @field_validator("embedding", mode="before")
    @classmethod
    def _spec(cls, value: Any) -> Any:
        from experience_store import StoreError, parse_spec

        try:
            return parse_spec(value) if isinstance(value, (str, dict)) else value
        except StoreError as e:
            raise ValueError(str(e)) from None


def _check_agent(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise ValueError("give the command that runs your agent, e.g. --agent 'python my_agent.py'")
    return value


def _check_report_to(value: Any) -> Any:
    from tfgrpo.tracking import parse_report_to

    parse_report_to(value)
    return value


class SplitConfig(_Model):
    fractions: str | None = Field(
        None,
        description="Split the task's dataset into train/validation/test by --split-seed, e.g. 70/15/15 (default: the task's own train and test sets)",
        json_schema_extra=flag("split"),
    )
    seed: int = Field(
        0,
        description="Seed of --split: the same seed gives the same split in train and eval",
        json_schema_extra=flag("split-seed"),
    )


class BudgetConfig(_Model):
    """Run budgets; YAML ``budget: {tokens: N}`` is the flag ``--budget-tokens N``."""

    cost: float | None = Field(
        None,
        gt=0,
        description="Run budget in USD: stop at the step boundary before it would be passed (resume with a higher one)",
        json_schema_extra=flag("budget-cost"),
    )
    tokens: int | None = Field(
        None,
        gt=0,
        description="Run budget in tokens (policy + judge, prompt + completion), same rule",
        json_schema_extra=flag("budget-tokens"),
    )
    calls: int | None = Field(
        None,
        gt=0,
        description="Run budget in LLM requests actually sent (cache hits are free), same rule",
        json_schema_extra=flag("budget-calls"),
    )
    price_per_mtok: str | None = Field(
        None,
        description="IN,OUT: USD per million prompt and completion tokens for models litellm has no price for (local vLLM)",
        json_schema_extra=flag("price-per-mtok"),
    )


class RunConfig(_Paths):
    """Everything a training-free run needs. Field order is the config.yaml layout."""

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, value: Any) -> Any:
        return _check_report_to(value)

    _agent = field_validator("agent")(_check_agent)

    version: int = 1
    task: str = Field(
        "demo", description="Task: a built-in name (demo, math) or file.py:name", json_schema_extra=flag("task")
    )
    data: str | None = Field(
        None,
        description="Data file for the task (JSONL, JSON or Parquet) or a Hugging Face dataset id",
        json_schema_extra=flag("data"),
    )
    task_args: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the task function")
    epochs: int = Field(3, gt=0, description="Passes over the training set", json_schema_extra=flag("epochs"))
    batch_size: int = Field(8, gt=0, description="Queries per step", json_schema_extra=flag("batch-size"))
    limit: int | None = Field(
        None, gt=0, description="Use only the first N training samples", json_schema_extra=flag("limit")
    )
    advantage: Literal["grpo", "dr_grpo", "gdpo"] = Field(
        "grpo", description="Numeric advantage: grpo, dr_grpo or gdpo", json_schema_extra=flag("advantage")
    )
    cache: bool = Field(
        True, description="Serve repeated requests from the response cache", json_schema_extra=flag("cache")
    )
    cache_path: str | None = Field(
        None,
        description="Response cache file (default: cache.sqlite in the run directory); share one between runs to pay no call twice",
        json_schema_extra=flag("cache-path"),
    )
    prompts_dir: str | None = Field(
        None,
        description="Folder whose *.j2 templates override the built-in prompts",
        json_schema_extra=flag("prompts-dir"),
    )
    agent: str | None = Field(
        None,
        description="Your own agent program, run once per rollout instead of the built-in agent: a shell command given "
        "the sample as JSON on stdin and an OpenAI-compatible OPENAI_BASE_URL, its answer read from stdout "
        "(a task's own agent function is used without it)",
        json_schema_extra=flag("agent"),
    )
    serve: str | None = Field(
        None,
        description="Start 'vllm serve MODEL' for the length of the run and use it as the policy",
        json_schema_extra=flag("serve"),
    )
    serve_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Launcher options for --serve (tensor_parallel_size, gpu_memory_utilization, max_model_len)",
    )
    select: Literal["last", "best-val"] = Field(
        "last",
        description="Library the run keeps: the last one, or the epoch scoring best on the validation split (needs --split)",
        json_schema_extra=flag("select"),
    )
    val_n: int = Field(
        4, gt=0, description="Answers per validation problem for --select best-val", json_schema_extra=flag("val-n")
    )
    report_to: str | None = Field(
        None,
        description="Log each step's metrics to tensorboard, wandb or mlflow (comma-separated; each an optional extra)",
        json_schema_extra=flag("report-to"),
    )
    advantage_std: Literal["unbiased", "population"] = Field(
        "unbiased",
        description="Standard deviation in the grpo/gdpo advantages: unbiased (divide by G-1; the default, as TRL's GRPOTrainer and torch.std, so recorded advantages match TRL's) or population (divide by G)",
        json_schema_extra=flag("advantage-std"),
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    library: LibraryConfig = Field(default_factory=LibraryConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)


class EvalConfig(_Paths):
    _agent = field_validator("agent")(_check_agent)

    version: int = 1
    task: str | None = Field(
        None,
        description="Task: a built-in name or file.py:name (default: the --library's task)",
        json_schema_extra=flag("task"),
    )
    data: str | None = Field(
        None,
        description="Evaluation data file for the task (JSONL, JSON or Parquet) or a dataset id (default: the run's)",
        json_schema_extra=flag("data"),
    )
    task_args: dict[str, Any] = Field(default_factory=dict, description="Extra keyword arguments for the task function")
    k: int = Field(4, gt=0, description="k of Mean@k and Pass@k", json_schema_extra=flag("k", "k"))
    n: int | None = Field(
        None,
        gt=0,
        description="Answers sampled per problem and seed, n >= k (default: k); more gives tighter estimates",
        json_schema_extra=flag("n", "n"),
    )
    seeds: int = Field(
        1,
        gt=0,
        description="Sampling seeds: --seed, --seed+1, ...; baseline and library share them",
        json_schema_extra=flag("seeds"),
    )
    eval_on: Literal["test", "validation", "train"] = Field(
        "test", description="Which part of the --split to evaluate on", json_schema_extra=flag("eval-on")
    )
    limit: int | None = Field(
        None, gt=0, description="Evaluate only the first N problems", json_schema_extra=flag("limit")
    )
    cache_path: str | None = Field(
        None, description="Response cache file (default: none)", json_schema_extra=flag("cache-path")
    )
    prompts_dir: str | None = Field(
        None,
        description="Folder whose *.j2 templates override the built-in prompts",
        json_schema_extra=flag("prompts-dir"),
    )
    agent: str | None = Field(
        None,
        description="Your own agent program, run once per rollout instead of the built-in agent: a shell command given "
        "the sample as JSON on stdin and an OpenAI-compatible OPENAI_BASE_URL, its answer read from stdout "
        "(never taken from the --library run: name it here)",
        json_schema_extra=flag("agent"),
    )
    placebo: bool = Field(
        False,
        description="Also run a placebo arm: the library's prompt with each lesson replaced by neutral text of equal token length, to tell the lessons' content from the prompt format",
        json_schema_extra=flag("placebo"),
    )
    sampling: AnswerSampling = Field(
        default_factory=AnswerSampling,
        description="Temperature, completion tokens and seed (--seed, --seed+1, ... for --seeds)",
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config a run directory was made with."""
    return build(RunConfig, load_yaml(Path(run_dir) / CONFIG))
