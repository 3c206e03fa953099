"""A curated knowledge base: pre-verified answers given before anything is generated.

A file of question/answer entries (YAML, or JSON Lines with one entry object per line; see
``examples/knowledge.yaml``) is loaded once, at start-up, by :meth:`KnowledgeBase.load`; every
mistake is a :class:`~seawall.errors.ConfigurationError` that names the file, the entry (its index
and line) and the field. :meth:`KnowledgeBase.match` then says, for a user request, which entry
answers it, if any.

How matching works (offline, numpy only, well under a millisecond per request for a few hundred
entries): each text is read as content words with vectors and weights (:mod:`seawall.text_space`:
normalised, lower-cased, function words dropped, static token vectors of the embedded model).
Two texts are compared by

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import yaml

from seawall.errors import ConfigurationError
from seawall.text_space import TextFeatures, TextSpace, text_space

#: Score a request needs to match an entry, unless the file or the caller sets another.
DEFAULT_THRESHOLD: Final = 0.55
#: Share of the score that comes from content-word coverage; the rest is embedding cosine.
COVERAGE_WEIGHT: Final = 0.2
#: Cosine at which two content words count as the same (identical words score 1.0).
COVERAGE_SIMILARITY: Final = 0.4
#: Phrasings scored in full per request: the best ones by embedding cosine.
CANDIDATES: Final = 8

_ENTRY_FIELDS: Final = ("id", "questions", "answer", "sources")
_FILE_FIELDS: Final = ("entries", "threshold")


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
