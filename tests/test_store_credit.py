"""Usage credit from citations, pruning (reversible), near-duplicate MERGE candidates,
retrieval injection in a real training run, deterministic retrieval (ties by id), retrieval
from an earlier version, and an imported starting library (version 0)."""

import json

import pytest
import yaml

from cli_helpers import last_json, tfgrpo
from experience_store import (
    Experience,
    ExperienceOp,
    Index,
    InjectionSettings,
    Library,
    LibraryState,
    Pack,
    Stats,
    cited_ids,
    prune_ops,
    usage_credit,
)
from experience_store.pack import MERGE_THRESHOLD
from tfgrpo.config import build
from tfgrpo.errors import UserError
from tfgrpo.training_free.config import LibraryConfig, RunConfig
from tfgrpo.training_free.distill import merge_candidates, prune_for
from tfgrpo.training_free.ops import ProposedOp
from tfgrpo.training_free.prompting import Prompts

TOP1 = InjectionSettings(mode="retrieve", top_k=1)


def add(lib, *texts, step=1):
    return lib.apply([ExperienceOp(op="ADD", text=t) for t in texts], step=step)


def test_citations_credit_compares_citing_and_non_citing_answers_of_a_group():
    assert cited_ids("Using [E3] and [E12], then [e3] again; not E4 or [X1]; [ E5 ].") == ["E3", "E12", "E5"]
    credit = usage_credit(
        [
            [
                (["E1", "E2"], "By [E1] the answer is 4.", 1.2),
                (["E1", "E2"], "Following [E1] and [E2]: 5.", -0.8),
                (["E1", "E2"], "No citation here.", 0.5),
            ],
            [(["E2"], "Cites [E1] though it was not shown.", 1.0), (["E2"], "Plain.", -1.0)],
        ],
        step=7,
    )
    # E1: cited at 1.2 and -0.8 against the non-citing 0.5: one comparison won, one lost.
    assert credit["E1"] == Stats(retrieved=3, cited=2, helpful=1, harmful=1, last_cited_step=7)
    # E2: cited once at -0.8 against 1.2 and 0.5 (lost both); never cited in the second group.
    assert credit["E2"] == Stats(retrieved=5, cited=1, helpful=0, harmful=2, last_cited_step=7)


def test_a_lesson_cited_in_every_answer_of_a_hard_problem_is_not_called_harmful():
    """Issue 11, defect 1: with the old credit (harmful = cited in an answer with negative
    advantage) a lesson cited by all five answers of a group at 20 % accuracy got 4 harmful
    votes of 5 and was retired at step 1; the problem's difficulty is no evidence about it."""
    group = [(["E1"], "Following [E1] ...", a) for a in (2.0, -0.5, -0.5, -0.5, -0.5)]
    credit = usage_credit([group, group], step=1)
    assert credit["E1"].helpful == credit["E1"].harmful == 0 and credit["E1"].cited == 10
    state = LibraryState(experiences=[Experience(id="E1", text="When a, b.", stats=credit["E1"])])
    assert prune_ops(state, 1, unused_steps=0, min_votes=3) == []


def test_credit_is_stored_and_prune_retires_harmful_and_unused_reversibly(tmp_path):
    lib = Library(tmp_path / "lib")
    add(lib, "When A, do a.", "When B, do b.", "When C, do c.")
    lib.apply(
        [],
        step=2,
        credit={
            "E1": Stats(retrieved=5, cited=4, helpful=1, harmful=3, last_cited_step=2),
            "E2": Stats(retrieved=5, cited=2, helpful=2, last_cited_step=2),
        },
    )
    assert lib.state.get("E1").stats.harmful == 3
    ops = prune_ops(lib.state, step=6, unused_steps=5)
    assert {o.id: o.reason for o in ops} == {
        "E1": "prune: lost 3 of 4 within-group comparisons",
        "E3": "prune: not cited for 5 steps",
    }
    res = lib.apply(ops, step=6)
    assert [e.id for e in lib.experiences] == ["E2"]
    assert all(r.op.reason.startswith("prune:") for r in res)
    lib.apply([ExperienceOp(op="RESTORE", id="E3")], step=7)
    assert [e.id for e in lib.experiences] == ["E2", "E3"]
    assert lib.apply([ExperienceOp(op="RESTORE", id="E2")], step=8)[0].status == "rejected"


def test_prune_for_uses_this_steps_credit_and_spares_touched_ids(tmp_path):
    lib = Library(tmp_path / "lib")
    add(lib, "When A, do a.", "When B, do b.")
    cfg = LibraryConfig(prune_min_votes=2, prune_harmful=True)
    assert (
        prune_for(lib, LibraryConfig(prune_min_votes=2), {i: Stats(cited=2, harmful=2) for i in ("E1", "E2")}, 2, [])
        == []
    )
    credit = {i: Stats(cited=2, harmful=2, last_cited_step=2) for i in ("E1", "E2")}
    pruned = prune_for(lib, cfg, credit, 2, [ExperienceOp(op="UPDATE", id="E2", text="When B, do b well.")])
    assert [o.id for o in pruned] == ["E1"]


def test_near_duplicate_proposals_reach_consolidation_as_merge_candidates(tmp_path):
    lib = Library(tmp_path / "lib")
    add(lib, "When adding fractions, rewrite both over a common denominator first.", "When stuck, reread the question.")
    props = [
        ProposedOp(op="ADD", text="When adding fractions, rewrite both over a common denominator first!"),
        ProposedOp(op="ADD", text="When a percentage changes twice, multiply the factors."),
    ]
    cands = merge_candidates(lib, props, threshold=0.9)
    assert len(cands) == 1 and cands[0]["similar_to"][0]["id"] == "E1"
    prompt = Prompts().render(
        "consolidate.j2", library_block=lib.render(), proposals_block="", schema="{}", candidates=json.dumps(cands)
    )
    assert "<merge_candidates>" in prompt and '"E1"' in prompt


def test_training_with_retrieval_injection_counts_usage(tmp_path):
    out = tmp_path / "run"
    summary = last_json(
        tfgrpo(
            "train",
            "--task",
            "demo",
            "--model",
            "sim",
            "--epochs",
            "2",
            "--limit",
            "16",
            "--injection",
            "retrieve",
            "--top-k",
            "2",
            "--inject-budget",
            "200",
            "--out",
            str(out),
            "--json",
            "-q",
        )
    )
    assert summary["library_size"] > 2
    lib = Library(out / "library")
    retrieved = [e.stats.retrieved for e in lib.experiences]
    assert sum(retrieved) > 0
    # each prompt got at most top-k=2 lessons: 16 queries x 5 answers x 2 per step, at most
    steps = summary["steps"]
    assert sum(e.stats.retrieved for e in lib.state.experiences) <= steps * 8 * 5 * 2
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["library"]["injection"] == {"mode": "retrieve", "budget_tokens": 200, "top_k": 2}


def test_consolidation_sees_a_bounded_view_of_a_large_library(tmp_path):
    from experience_store import Injection
    from tfgrpo.training_free.distill import consolidation_view

    lib = Library(tmp_path / "lib")
    add(lib, "When A, do a.", "When B, do b.", "When C, do c.", "When D, do d.")
    shown = [Injection("", ["E1"], 0, "retrieve")]
    cands = [{"proposal": "x", "op": "ADD", "id": None, "similar_to": [{"id": "E3", "similarity": 0.95}]}]
    props = [ProposedOp(op="DELETE", id="E4")]
    view = consolidation_view(lib, LibraryConfig(injection=InjectionSettings(mode="retrieve")), shown, cands, props)
    assert view == "[E1] When A, do a.\n[E3] When C, do c.\n[E4] When D, do d."
    assert consolidation_view(lib, LibraryConfig(), shown, cands, props) == lib.render()


@pytest.mark.parametrize(
    "old,message",
    [
        (
            {"library": {"injection": "retrieve", "budget_tokens": 40, "top_k": 1}},
            "invalid config value for library.injection",
        ),
        ({"library": {"top_k": 3}}, "unknown config key library.top_k"),
        ({"budget": {"max_cost": 1.0}}, "unknown config key budget.max_cost; accepted there: cost, tokens, calls"),
        ({"budget": {"max_tokens": 5}}, "unknown config key budget.max_tokens"),
        ({"budget": {"max_calls": 5}}, "unknown config key budget.max_calls"),
    ],
)
def test_config_keys_of_an_older_layout_are_refused_in_one_line(old, message):
    with pytest.raises(UserError) as e:
        build(RunConfig, old)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert LibraryConfig.model_validate({"injection": {"mode": "retrieve", "top_k": 3}}).injection == InjectionSettings(
        mode="retrieve", top_k=3
    )
    with pytest.raises(ValueError, match="mode"):
        LibraryConfig.model_validate({"injection": {"mode": "everything"}})


@pytest.mark.slow
def test_training_keeps_the_chosen_embedding_and_refuses_an_unavailable_one(tmp_path):
    out = tmp_path / "run"
    tfgrpo(
        "train",
        "--task",
        "demo",
        "--model",
        "sim",
        "--epochs",
        "1",
        "--limit",
        "8",
        "--embedding",
        "lexical:64",
        "--injection",
        "auto",
        "--inject-budget",
        "30",
        "--out",
        str(out),
        "-q",
    )
    lib = Library(out / "library")
    assert lib.state.embedding == {"name": "lexical", "dim": 64} and len(lib) > 0
    bad = tfgrpo(
        "train",
        "--task",
        "demo",
        "--model",
        "sim",
        "--epochs",
        "1",
        "--limit",
        "8",
        "--embedding",
        "st:no-such-model-here",
        "--out",
        str(tmp_path / "bad"),
        "-q",
        check=False,
    )
    assert bad.returncode == 2 and "embedding sentence-transformers:no-such-model-here" in bad.stderr
    assert "Traceback" not in bad.stderr


SAME = "When a quadratic will not factor, use the quadratic formula."


def test_ties_at_the_kth_place_are_broken_by_id_every_time():
    # 30 lessons with one text: every one is equally similar to the query, so Chroma alone
    # returns any 3 of them (a different 3 from one index build to the next).
    exps = [Experience(id=f"E{i}", text=SAME) for i in range(1, 31)]
    for _ in range(4):
        index = Index.in_memory(exps, {"name": "lexical", "dim": 512})
        assert [i for i, _ in index.search("quadratic formula", 3)] == ["E1", "E2", "E3"]
        assert [i for i, _ in index.near_duplicates([SAME], 0.9, k=4)[0]] == ["E1", "E2", "E3", "E4"]
        assert Pack.build(exps).inject("quadratic formula", InjectionSettings(mode="retrieve", top_k=3)).ids == [
            "E1",
            "E2",
            "E3",
        ]


def test_ties_keep_the_more_similar_lessons_first_then_ids_in_natural_order():
    exps = [Experience(id=f"E{i}", text=SAME) for i in range(1, 13)] + [Experience(id="E13", text="quadratic formula")]
    index = Index.in_memory(exps, {"name": "lexical", "dim": 512})
    assert [i for i, _ in index.search("quadratic formula", 4)] == ["E13", "E1", "E2", "E3"]


def test_an_earlier_version_retrieves_from_its_own_lessons(tmp_path):
    lib = Library(tmp_path / "lib")
    lib.apply(
        [
            ExperienceOp(op="ADD", text="When adding fractions, use a common denominator."),
            ExperienceOp(op="ADD", text="When a triangle is right-angled, use Pythagoras."),
        ],
        step=1,
    )
    lib.apply(
        [
            ExperienceOp(op="DELETE", id="E1"),
            ExperienceOp(op="UPDATE", id="E2", text="When counting fence posts, add one to the gaps."),
            ExperienceOp(op="ADD", text="When adding fractions with a common denominator, add the numerators."),
        ],
        step=2,
    )
    old = Library(tmp_path / "lib", at_step=1)
    assert old.inject("adding fractions: common denominator", TOP1).ids == ["E1"]  # retired later
    assert old.inject("right-angled triangle Pythagoras", TOP1).ids == ["E2"]  # reworded later
    assert Library(tmp_path / "lib").inject("adding fractions: common denominator", TOP1).ids == ["E3"]


def test_import_as_version_zero_survives_a_fresh_runs_discard(tmp_path):
    pack = Pack.build([Experience(id="E1", text=SAME)])
    lib = Library(tmp_path / "lib")
    lib.import_pack(pack, step=0)
    assert lib.versions() == [0]
    lib.discard_after(0)  # what training in this directory does before its first step
    assert [e.text for e in Library(tmp_path / "lib").experiences] == [SAME]
    assert Pack.merge.__kwdefaults__["threshold"] == MERGE_THRESHOLD


def test_an_unscored_answer_is_no_evidence_for_the_lessons_it_cites():
    """A reward that failed leaves the answer's combined reward None and its advantage a 0.0
    placeholder: it must not win or lose comparisons for what it cites."""
    from tfgrpo.llm.client import Completion
    from tfgrpo.rewards import group_advantages
    from tfgrpo.task_registry import Sample
    from tfgrpo.training_free.step_writer import credit_evidence
    from tfgrpo.training_free.rollout import Group

    texts = ["plain", "plain", "plain", "Using [E1]: 42", None]  # the last request failed
    rewards = [[0.0], [0.0], [1.0], [None], [None]]
    group = Group(
        sample=Sample(id="q", prompt="?"),
        completions=[Completion(text=t, index=j) for j, t in enumerate(texts)],
        rewards=rewards,
        combined=[r[0] for r in rewards],
    )
    adv = group_advantages([rewards], [1.0], "grpo", std="unbiased")
    answered = [[j for j, c in enumerate(group.completions) if c.ok]]
    evidence = credit_evidence([group], answered, [["E1"]], adv)
    assert [text for _, text, _ in evidence[0]] == ["plain", "plain", "plain"]
    e1 = usage_credit(evidence, step=1)["E1"]
    assert (e1.cited, e1.helpful, e1.harmful) == (0, 0, 0) and e1.retrieved == 3


def test_merge_keeps_the_evidence_of_its_sources(tmp_path):
    lib = Library(tmp_path / "lib")
    add(lib, "Check units.", "Convert units first.", "Draw a diagram.", "Units before arithmetic.")
    credit = {f"E{i}": Stats(retrieved=12, cited=11, helpful=1, harmful=10, last_cited_step=i) for i in range(1, 5)}
    lib.apply([], step=2, credit=credit)
    lib.apply([ExperienceOp(op="MERGE", ids=["E1", "E2"], text="Convert units before any arithmetic.")], step=3)
    merged = next(e for e in lib.state.active() if e.id == "E5")
    assert merged.stats == Stats(retrieved=24, cited=22, helpful=2, harmful=20, last_cited_step=2)
    # a merge into a text that already stands: the standing lesson gains the sources' evidence
    lib.apply([ExperienceOp(op="MERGE", ids=["E3", "E5"], text="Units before arithmetic.")], step=4)
    e4 = next(e for e in lib.state.active() if e.id == "E4")
    assert e4.stats == Stats(retrieved=48, cited=44, helpful=4, harmful=40, last_cited_step=4)
    assert [e.id for e in lib.state.active()] == ["E4"]
    # and the evidence is enough to retire it under --prune-harmful
    assert [op.id for op in prune_ops(lib.state, 5, unused_steps=0, min_votes=12, harmful_share=0.5)] == ["E4"]
