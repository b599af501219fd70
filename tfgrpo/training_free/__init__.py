"""The training-free GRPO loop and its stages: rollout, judge, distill, evaluate, budget, leak
guard, split, prompting, structured output, agent. See docs/architecture.md."""
