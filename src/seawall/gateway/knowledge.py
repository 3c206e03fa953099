"""A curated knowledge base: pre-verified answers given before anything is generated.

A file of question/answer entries (YAML, or JSON Lines with one entry object per line; see
``examples/knowledge.yaml``) is loaded once, at start-up, by :meth:`KnowledgeBase.load`; every
mistake is a :class:`~seawall.errors.ConfigurationError` that names the file, the entry (its index
and line) and the field. :meth:`KnowledgeBase.match` then says, for a user request, which entry
answers it, if any.

How matching works (offline, numpy only, well under a millisecond per request for a few hundred
entries): text is normalised (:func:`seawall.model.normalize.normalize`), lower-cased and cut into
words; function words ("how", "do", "I", "the", ...) are dropped, and each remaining *content
word* gets a vector from the embedded model's static token vectors (the IDF-weighted sum of its
word pieces) and a weight (its rarest piece's IDF). Two texts are compared by

* ``semantic``: the cosine of their IDF-weighted mean content-word vectors, and
* ``coverage``: the smaller of the two directions' IDF-weighted share of content words that have a
  counterpart (cosine >= :data:`COVERAGE_SIMILARITY`, which an identical or closely related word
  reaches) in the other text — the lexical-overlap half, softened so "parcel"/"package" count.

``score = (1 - COVERAGE_WEIGHT) * semantic + COVERAGE_WEIGHT * coverage``; a request matches the
entry of its best-scoring phrasing when the score reaches the threshold. A negation in only one of
the two texts ("What can't be returned?" against "What can I return?") rules the pair out. The
weights and the default threshold were chosen on the shop half of ``bench/data/knowledge_cases.jsonl``
and measured on the bank half (``python bench/topics.py``).

Known limits, by construction of a static (context-free) encoder:

* paraphrases that share no content word and no close synonym with any listed phrasing ("What is
  the refund window?" against "How long do I have to return an item?") are missed: list the ways
  people really ask each question in ``questions``;
* a request that differs from a phrasing in one decisive word of the same kind ("cash withdrawal
  limit" against "transfer limit", "interest on loans" against "interest on savings") can match;
* word order and roles are invisible ("Can I send money to you?" = "Can you send money to me?");
* negation is only spotted through explicit words (not, no, never, -n't, without, ...), and the
  matcher is English-only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml
from numpy.typing import NDArray

from seawall.errors import ConfigurationError
from seawall.model.embeddings import TOKENIZER_FILE, VECTORS_FILE
from seawall.model.normalize import normalize

#: Score a request needs to match an entry, unless the file or the caller sets another.
DEFAULT_THRESHOLD: Final = 0.55
#: Share of the score that comes from content-word coverage; the rest is embedding cosine.
COVERAGE_WEIGHT: Final = 0.2
#: Cosine at which two content words count as the same (identical words score 1.0).
COVERAGE_SIMILARITY: Final = 0.4
#: Phrasings scored in full per request: the best ones by embedding cosine.
CANDIDATES: Final = 8
#: Characters of a request that are read; a knowledge-base question is short.
MAX_QUERY_CHARS: Final = 2000

_ENTRY_FIELDS: Final = ("id", "questions", "answer", "sources")
_FILE_FIELDS: Final = ("entries", "threshold")

# Function words carry no topic: dropping them keeps "How long ... take?" from matching every
# other "How long ... ?" question. Negations are kept apart (see _NEGATION).
STOPWORDS: Final = frozenset(
    re.findall(
        r"\S+",
        """
    a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i i'd i'll i'm i've if in into is it it's its
    itself just let's me might more most must my myself of off on once only or other ought our ours
    ourselves out over own please same shall she should so some such than that that's the their theirs
    them themselves then there there's these they this those through to too under until up upon us very
    was we were what what's when where which while who whom whose why will with would you your yours
    yourself yourselves also really get got ok okay hi hello hey thanks thank yes yeah s t d ll m re ve
    """,
    )
)
_NEGATION: Final = re.compile(
    r"\b(?:not|no|never|nothing|nobody|none|cannot|without|neither|nor)\b|n't\b|\b(?:cant|wont|dont|"
    r"doesnt|didnt|isnt|arent|wasnt|werent|havent|hasnt|shouldnt|wouldnt|couldnt)\b"
)
_WORD: Final = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SUFFIXES: Final = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    """A deliberately light suffix stripper: plurals and -ed/-ing only."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True)
class TextFeatures:
    """What matching needs of one text: content words, their vectors and weights, a sentence vector."""

    words: tuple[str, ...]
    vectors: NDArray[np.float32]  # (n_words, dims), rows L2-normalised
    weights: NDArray[np.float32]  # (n_words,)
    sentence: NDArray[np.float32]  # (dims,), L2-normalised; zeros when there is no content word
    negated: bool

    @property
    def empty(self) -> bool:
        return not self.words


class TextSpace:
    """Content-word vectors from the embedded model's static token vectors; thread-safe to read.

    Built once per artefact directory (:func:`text_space`) and shared by the knowledge base, the
    topic guard and the review's domain detector. Word vectors are cached, so a vocabulary seen
    before costs one dictionary look-up; so are the features of the last few single texts, since
    each of those reads the same request.
    """

    #: Words whose vectors are kept; the cache is cleared when it grows past this.
    CACHE_WORDS = 100_000
    #: Single texts whose features are kept (least recently used first out).
    CACHE_TEXTS = 16

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
            vectors = np.load(directory / VECTORS_FILE)
            with np.load(directory / "weights.npz") as arrays:
                token_weights = np.asarray(arrays["token_weights"], dtype=np.float32)
        except Exception as exc:  # tokenizers raises plain Exception; numpy OSError/KeyError/ValueError
            raise ConfigurationError(
                f"the embedded model's token vectors in {directory} cannot be read: {exc}"
            ) from exc
        if vectors.shape[0] != token_weights.shape[0]:
            raise ConfigurationError(f"token vectors and token weights in {directory} disagree in size")
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._weighted = vectors.astype(np.float32) * token_weights[:, None]
        self._token_weights = token_weights
        self.dims = int(vectors.shape[1])
        self._cache: dict[str, tuple[NDArray[np.float32], float]] = {}
        self._one = lru_cache(maxsize=self.CACHE_TEXTS)(self._features_of_one)

    def content_words(self, text: str) -> tuple[list[str], bool]:
        """The content words of ``text`` (lower-cased, stemmed) and whether it contains a negation."""
        lowered = normalize(text[:MAX_QUERY_CHARS]).lower().replace("\u2019", "'")
        negated = _NEGATION.search(lowered) is not None
        words = []
        for word in _WORD.findall(lowered):
            if word in STOPWORDS or _NEGATION.fullmatch(word) or word.endswith("n't"):
                continue
            words.append(_stem(word.removesuffix("'s")))
        return words, negated

    def _word_vectors(self, words: Iterable[str]) -> None:
        missing = sorted({word for word in words if word not in self._cache})
        if not missing:
            return
        if len(self._cache) + len(missing) > self.CACHE_WORDS:
            self._cache = {}
        for word, encoding in zip(
            missing, self._tokenizer.encode_batch(missing, add_special_tokens=False), strict=True
        ):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            if ids.size == 0:
                self._cache[word] = (np.zeros(self.dims, dtype=np.float32), 0.0)
                continue
            vector = self._weighted[ids].sum(axis=0)
            norm = float(np.linalg.norm(vector))
            self._cache[word] = (vector / max(norm, 1e-6), float(self._token_weights[ids].max()))

    def features(self, texts: Sequence[str]) -> list[TextFeatures]:
        """:class:`TextFeatures` of each text (batching amortises the tokenizer call)."""
        if len(texts) == 1:
            # A request's text, read by several checks: computed once. Keyed by the part that is
            # read, so no long text is kept.
            return [self._one(texts[0][:MAX_QUERY_CHARS])]
        return self._features(texts)

    def _features_of_one(self, text: str) -> TextFeatures:
        return self._features([text])[0]

    def _features(self, texts: Sequence[str]) -> list[TextFeatures]:
        parsed = [self.content_words(text) for text in texts]
        self._word_vectors(word for words, _ in parsed for word in words)
        out = []
        for words, negated in parsed:
            unique = list(dict.fromkeys(words))
            if not unique:
                out.append(
                    TextFeatures(
                        (),
                        np.zeros((0, self.dims), dtype=np.float32),
                        np.zeros(0, dtype=np.float32),
                        np.zeros(self.dims, dtype=np.float32),
                        negated,
                    )
                )
                continue
            vectors = np.stack([self._cache[word][0] for word in unique]).astype(np.float32)
            weights = np.asarray([self._cache[word][1] for word in unique], dtype=np.float32)
            sentence = (vectors * weights[:, None]).sum(axis=0)
            sentence /= max(float(np.linalg.norm(sentence)), 1e-6)
            out.append(TextFeatures(tuple(unique), vectors, weights, sentence.astype(np.float32), negated))
        return out


@lru_cache(maxsize=4)
def text_space(directory: Path | None = None) -> TextSpace:
    """One :class:`TextSpace` per artefact directory (default: the shipped model), shared."""
    from seawall.model.classifier import default_model_dir

    return TextSpace(directory or default_model_dir())


def coverage(query: TextFeatures, candidate: TextFeatures) -> float:
    """The smaller of the two directions' weighted share of content words with a counterpart."""
    if query.empty or candidate.empty:
        return 0.0
    similarity = query.vectors @ candidate.vectors.T
    covered_query = float(((similarity.max(axis=1) >= COVERAGE_SIMILARITY) * query.weights).sum())
    covered_candidate = float(((similarity.max(axis=0) >= COVERAGE_SIMILARITY) * candidate.weights).sum())
    return min(covered_query / float(query.weights.sum()), covered_candidate / float(candidate.weights.sum()))


def combined_score(semantic: float, covered: float) -> float:
    """The knowledge base's match score from its two parts."""
    return (1.0 - COVERAGE_WEIGHT) * semantic + COVERAGE_WEIGHT * covered


# --- the knowledge base ----------------------------------------------------------------------------


@dataclass(frozen=True)
class KnowledgeEntry:
    """One pre-verified answer and the phrasings of the question it answers."""

    id: str
    questions: tuple[str, ...]
    answer: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class KnowledgeMatch:
    """The entry that answers a request: its id, answer and sources, the score and the phrasing hit."""

    entry_id: str
    answer: str
    sources: tuple[str, ...]
    score: float
    question: str


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:60].strip("-") or "entry"


def _check_threshold(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ConfigurationError(f"{where}: threshold must be a number above 0 and at most 1 (got {value!r})")
    return float(value)


class KnowledgeBase:
    """Pre-verified answers, matched to requests by meaning (see the module docstring)."""

    def __init__(
        self,
        entries: Sequence[KnowledgeEntry],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        source: str = "<knowledge base>",
        space: TextSpace | None = None,
    ) -> None:
        """Index ``entries``; ``source`` names them in error messages. Raises ConfigurationError."""
        self.source = source
        self.threshold = _check_threshold(threshold, source)
        self.entries: tuple[KnowledgeEntry, ...] = tuple(entries)
        self._space = space or text_space()
        seen_ids: set[str] = set()
        seen_questions: dict[str, str] = {}
        self._owner: list[int] = []
        self._phrasings: list[str] = []
        for index, entry in enumerate(self.entries):
            if entry.id in seen_ids:
                raise ConfigurationError(
                    f"{source}: entries[{index}].id: duplicate id {entry.id!r}", param="id"
                )
            seen_ids.add(entry.id)
            for question in entry.questions:
                key = " ".join(question.lower().split())
                if key in seen_questions and seen_questions[key] != entry.id:
                    raise ConfigurationError(
                        f"{source}: entries[{index}].questions: {question!r} is also a question of "
                        f"entry {seen_questions[key]!r}",
                        param="questions",
                    )
                seen_questions[key] = entry.id
                self._owner.append(index)
                self._phrasings.append(question)
        self._features = self._space.features(self._phrasings)
        for phrasing, features, owner in zip(self._phrasings, self._features, self._owner, strict=True):
            if features.empty:
                raise ConfigurationError(
                    f"{source}: entry {self.entries[owner].id!r}: question {phrasing!r} has no content word "
                    "to match on (only words like 'how', 'is', 'it'); say what it asks about",
                    param="questions",
                )
        self._matrix = (
            np.stack([features.sentence for features in self._features])
            if self._features
            else np.zeros((0, self._space.dims), dtype=np.float32)
        )

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(
        cls, path: str | Path, *, threshold: float | None = None, space: TextSpace | None = None
    ) -> KnowledgeBase:
        """Read and check a ``.yaml``/``.yml`` or ``.jsonl`` file.

        ``threshold`` overrides the file's ``threshold`` (YAML only), which overrides
        :data:`DEFAULT_THRESHOLD`. Every mistake raises ConfigurationError naming the file, the
        entry and the field.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigurationError(f"knowledge base file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"knowledge base file {path} cannot be read: {exc}") from exc
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            raw_entries, file_threshold = _parse_yaml(text, str(path))
        elif suffix == ".jsonl":
            raw_entries, file_threshold = _parse_jsonl(text, str(path)), None
        else:
            raise ConfigurationError(
                f"knowledge base file {path}: unknown format {suffix or '(no extension)'!r}; "
                "use .yaml, .yml or .jsonl"
            )
        entries = _build_entries(raw_entries, str(path))
        chosen = threshold if threshold is not None else file_threshold
        chosen = DEFAULT_THRESHOLD if chosen is None else _check_threshold(chosen, str(path))
        return cls(entries, threshold=chosen, source=str(path), space=space)

    def match(self, text: str, *, threshold: float | None = None) -> KnowledgeMatch | None:
        """The entry that answers ``text``, or None when no phrasing scores at least the threshold."""
        return self.match_many([text], threshold=threshold)[0]

    def match_many(
        self, texts: Sequence[str], *, threshold: float | None = None
    ) -> list[KnowledgeMatch | None]:
        """:meth:`match` for several texts, sharing one tokenizer call and one matrix product."""
        limit = self.threshold if threshold is None else _check_threshold(threshold, "match")
        if not texts:
            return []
        queries = self._space.features(texts)
        if not self._phrasings:
            return [None] * len(texts)
        semantic = np.stack([query.sentence for query in queries]) @ self._matrix.T
        results: list[KnowledgeMatch | None] = []
        for row, query in zip(semantic, queries, strict=True):
            if query.empty:
                results.append(None)
                continue
            best: tuple[float, int] | None = None
            # Only the phrasings closest by embedding are worth the word-by-word comparison.
            for position in np.argsort(-row)[:CANDIDATES]:
                candidate = self._features[int(position)]
                if candidate.negated != query.negated:
                    continue  # "Can't I ...?" is not "Can I ...?"
                score = combined_score(float(row[position]), coverage(query, candidate))
                if best is None or score > best[0]:
                    best = (score, int(position))
            if best is None or best[0] < limit:
                results.append(None)
                continue
            entry = self.entries[self._owner[best[1]]]
            results.append(
                KnowledgeMatch(
                    entry.id, entry.answer, entry.sources, round(best[0], 4), self._phrasings[best[1]]
                )
            )
        return results


# --- reading files ---------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if isinstance(key, str) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        if isinstance(key, str):
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _parse_yaml(text: str, source: str) -> tuple[list[tuple[str, Any]], float | None]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"knowledge base file {source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        kind = "nothing" if data is None else f"a {type(data).__name__}"
        raise ConfigurationError(
            f"knowledge base file {source} must hold a mapping with 'entries' at the top level, not {kind}"
        )
    unknown = sorted(str(key) for key in data if key not in _FILE_FIELDS)
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown top-level field {unknown[0]!r} (allowed: {', '.join(_FILE_FIELDS)})",
            param=unknown[0],
        )
    if "entries" not in data:
        raise ConfigurationError(f"{source}: entries: required field is missing", param="entries")
    entries = data["entries"]
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{source}: entries: must be a non-empty list of entries", param="entries")
    lines: list[int] = []
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if key_node.value == "entries" and isinstance(value_node, yaml.SequenceNode):
                lines = [item.start_mark.line + 1 for item in value_node.value]
    located = [
        (f"entries[{index}] (line {lines[index]})" if index < len(lines) else f"entries[{index}]", entry)
        for index, entry in enumerate(entries)
    ]
    threshold = data.get("threshold")
    return located, None if threshold is None else _check_threshold(threshold, source)


def _parse_jsonl(text: str, source: str) -> list[tuple[str, Any]]:
    located: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            located.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{source}: line {number}: not valid JSON: {exc.msg}") from exc
    if not located:
        raise ConfigurationError(f"{source}: the file holds no entries", param="entries")
    return located


def _strings(value: Any, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigurationError(f"{where}.{field}: must be a non-empty list of strings", param=field)
    out = []
    for position, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise ConfigurationError(
                f"{where}.{field}[{position}]: must be a non-empty string (got {item!r})", param=field
            )
        out.append(item.strip())
    return tuple(out)


def _build_entries(located: list[tuple[str, Any]], source: str) -> list[KnowledgeEntry]:
    entries: list[KnowledgeEntry] = []
    used: set[str] = set()
    for label, raw in located:
        where = f"{source}: {label}"
        if not isinstance(raw, dict):
            raise ConfigurationError(
                f"{where}: an entry must be a mapping of fields, not {type(raw).__name__}"
            )
        unknown = sorted(str(key) for key in raw if key not in _ENTRY_FIELDS)
        if unknown:
            raise ConfigurationError(
                f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(_ENTRY_FIELDS)})", param=unknown[0]
            )
        for field in ("questions", "answer", "sources"):
            if field not in raw:
                raise ConfigurationError(f"{where}.{field}: required field is missing", param=field)
        questions = _strings(raw["questions"], where, "questions")
        answer = raw["answer"]
        if not isinstance(answer, str) or not answer.strip():
            raise ConfigurationError(
                f"{where}.answer: must be a non-empty string (got {answer!r})", param="answer"
            )
        sources = _strings(raw["sources"], where, "sources")
        if "id" in raw:
            entry_id = raw["id"]
            if not isinstance(entry_id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", entry_id):
                raise ConfigurationError(
                    f"{where}.id: must be a string of letters, digits and . _ : / - (got {entry_id!r})",
                    param="id",
                )
            if entry_id in used:
                raise ConfigurationError(f"{where}.id: duplicate id {entry_id!r}", param="id")
        else:
            base = entry_id = _slug(questions[0])
            suffix = 2
            while entry_id in used:
                entry_id, suffix = f"{base}-{suffix}", suffix + 1
        used.add(entry_id)
        entries.append(KnowledgeEntry(entry_id, questions, answer.strip(), sources))
    return entries
