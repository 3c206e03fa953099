"""Off-topic detection: does a request fall within what the app is for?

:meth:`TopicGuard.from_policy` builds a detector from a policy's ``purpose``, ``allowed_topics``
and, optionally, example requests; :meth:`TopicGuard.check` decides offline, in well under a
millisecond, with the static content-word vectors of :mod:`seawall.text_space`.

The decision, in order:

1. a *general* policy ("any question a general-purpose assistant can answer safely", "anything",
   "all topics", ...) makes every request on-topic: a detector that refuses on a general policy
   is worse than none;
2. small talk, greetings, thanks and questions about the assistant itself ("hello", "thanks!",
   "what can you do?", "are you a bot?") are on-topic, and so is a request with no content word;
3. otherwise the request is compared with the policy's *anchors* (the purpose, each topic, each
   comma- or "and"-separated part of a topic, each on-topic example) and with the *other
   domains*: a built-in list of requests typical of other domains (poems, sport, homework,
   travel, ...; the ones that resemble the policy's own anchors are left out) plus the policy's
   own off-topic examples, always kept. ``score`` is the best anchor similarity minus the best
   other-domain similarity; the request is on-topic when ``score >= threshold``, or when its best
   anchor similarity alone reaches :data:`CLEARLY_ON_TOPIC` and no off-topic example of the
   policy is as close.

An example is *off-topic* when its answer is the policy's ``off_topic_reply`` (compared with
case and whitespace folded, :func:`is_refusal_example`): the operator wrote it to show what the
app refuses, so its user turn counts against the topic, never for it.

The threshold was chosen on two policies of ``bench/data/topic_cases.jsonl`` and measured on the
others (``python bench/topics.py``); it leans towards letting requests through, because refusing
a customer's real question costs more than letting a stray one reach a model that has the policy
in its system prompt anyway.

Known limits: the static encoder knows words, not sentences, so a request whose words are rare or
unrelated to the topic descriptions ("How do I set up a standing order?" for banking, "my brakes
squeak" for a bike shop) can look off-topic — give ``examples`` that use the app's vocabulary; a
neighbouring domain that shares words with the topics ("What's the best car to buy?" for a bike
shop) can look on-topic; English only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ConfigurationError
from seawall.text_space import TextFeatures, TextSpace, text_space

if TYPE_CHECKING:
    from seawall.gateway.policy import Policy

#: ``score`` (best anchor similarity minus best other-domain similarity) a request needs.
DEFAULT_THRESHOLD: Final = -0.1
#: Anchor similarity at which a request is on-topic whatever the other domains say.
CLEARLY_ON_TOPIC: Final = 0.6
#: Other-domain references at least this close to one of the policy's anchors are not used.
REFERENCE_OVERLAP: Final = 0.5

# Phrases that make a policy general: whatever else it lists, everything is on-topic.
_GENERAL: Final = re.compile(
    r"\b(?:any(?:thing| topic| subject| question| request)s?|every(?:thing| topic| subject)"
    r"|all (?:topics|subjects|questions|kinds of)"
    r"|general[- ](?:purpose|knowledge|questions?|assistant|topics?|help)|open[- ]domain"
    r"|whatever (?:the user|they|users?) (?:ask|want|need)s?)\b",
    re.IGNORECASE,
)

# Small talk: every word is a greeting, thanks, farewell or acknowledgement or filler around one.
_SMALL_TALK_CORE: Final = frozenset(
    re.findall(
        r"\S+",
        "hi hello hey hiya howdy greetings morning afternoon evening thanks thank thx ty cheers appreciated "
        "bye goodbye ok okay cool great nice perfect awesome understood",
    )
)
_SMALL_TALK_FILLER: Final = frozenset(
    re.findall(
        r"\S+",
        "there all everyone again so much very a lot for the your you that this it that's it's helps helped "
        "helpful help info good day have see later got mate friend bot team folks guys and oh well then "
        "really just i we wish many",
    )
)
# Questions about the assistant itself, and bare requests for help.
_META: Final = re.compile(
    r"^\W*(?:(?:hi|hello|hey)\W+)?(?:(?:what|how) (?:can|could|do|will) you (?:do|help)\b.*"
    r"|what (?:can|could) you help (?:me )?with\b.*"
    r"|what (?:kind|sort|type)s? of (?:questions|things|requests)\b.*"
    r"|who (?:are|r) you\b.*"
    r"|(?:are|r) you (?:a |an )?(?:real |actual )?(?:bot|robot|human|person|ai|machine|chatbot)\b.*"
    r"|what(?:'s| is) your name\b.*|how are you\b.*"
    r"|(?:can|could) you help(?: me)?\W*|i need (?:some )?help\W*)$",
    re.IGNORECASE,
)
_SMALL_TALK_WORD: Final = re.compile(r"[a-z']+")
#: Small talk is short: a long message that starts with "hi" still gets checked.
_SMALL_TALK_MAX_WORDS: Final = 10

# Requests typical of other domains: the contrast that tells "far from every topic" apart from
# "far from the topics' wording". Written for seawall; kept general on purpose.
OTHER_DOMAINS: Final = (
    "Write a poem about love.",
    "Tell me something funny.",
    "Who won the game last weekend?",
    "What is the capital city of Japan?",
    "Explain quantum physics to me.",
    "Solve this algebra equation for my homework.",
    "Write Python code to parse a CSV file.",
    "What will the weather be like this week?",
    "Who is the prime minister of the United Kingdom?",
    "Recommend a film to watch.",
    "Translate this paragraph into French.",
    "Write an essay about ancient history.",
    "What are the symptoms of diabetes?",
    "Should I invest in shares or cryptocurrency?",
    "Give me a recipe for pancakes.",
    "How do I repair my car engine?",
    "Plan a holiday itinerary in Italy.",
    "Which smartphone is the best?",
    "How can I lose weight fast?",
    "Tell me about the planets of the solar system.",
    "Write a short story about a wizard.",
    "Help me write a job application letter.",
    "What is the meaning of life?",
    "How do I train my dog to sit?",
    "Explain the causes of the French Revolution.",
    "Who painted the Sistine Chapel ceiling?",
    "How do I grow vegetables in the garden?",
    "What music should I listen to?",
    "My computer is slow, how do I fix it?",
    "What is the latest celebrity gossip?",
    "How does the stock exchange work?",
    "What are the rules of basketball?",
    "Write song lyrics about heartbreak.",
    "What is the best religion?",
    "Which political party should I vote for?",
    "How do I learn to play the guitar?",
)


@dataclass(frozen=True)
class TopicVerdict:
    """Whether a request is on-topic.

    ``score``: best anchor similarity minus best other-domain similarity (1.0 for general policies
    and small talk); ``nearest_topic``: the allowed topic closest to the request (None for general
    policies, small talk and empty requests); ``reason``: ``general_policy``, ``small_talk``,
    ``no_content``, ``on_topic`` or ``off_topic``.
    """

    on_topic: bool
    score: float
    nearest_topic: str | None
    reason: str


def _topic_parts(topic: str) -> list[str]:
    """'orders, payment and tracking' -> ['orders', 'payment', 'tracking']: each part an anchor too."""
    parts = re.split(r",|;|/|\band\b|\bor\b|&", topic)
    return [part.strip() for part in parts if len(part.strip()) > 2 and part.strip() != topic.strip()]


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def is_refusal_example(answer: str, off_topic_reply: str) -> bool:
    """Whether an example's ``answer`` is the policy's ``off_topic_reply`` (case and spacing aside)."""
    reply = _fold(off_topic_reply)
    return bool(reply) and reply in _fold(answer)


def is_general_policy(purpose: str, allowed_topics: Sequence[str]) -> bool:
    """Whether the policy allows anything (see :data:`_GENERAL`)."""
    return any(_GENERAL.search(text) for text in (purpose, *allowed_topics))


def is_small_talk(text: str) -> bool:
    """Greetings, thanks, farewells, acknowledgements and questions about the assistant itself."""
    stripped = " ".join(text.split()).replace("\u2019", "'")
    if len(stripped.split()) > _SMALL_TALK_MAX_WORDS:
        return False
    if _META.match(stripped):
        return True
    words = _SMALL_TALK_WORD.findall(stripped.lower())
    return (
        bool(words)
        and any(word in _SMALL_TALK_CORE for word in words)
        and all(word in _SMALL_TALK_CORE or word in _SMALL_TALK_FILLER for word in words)
    )


class TopicGuard:
    """Decides whether requests fall within a policy's purpose and allowed topics."""

    def __init__(
        self,
        purpose: str,
        allowed_topics: Sequence[str],
        examples: Sequence[str] = (),
        *,
        off_topic_examples: Sequence[str] = (),
        threshold: float = DEFAULT_THRESHOLD,
        space: TextSpace | None = None,
    ) -> None:
        """Prefer :meth:`from_policy`; raises ConfigurationError for an empty purpose or topic list.

        ``examples`` are requests the app answers (anchors); ``off_topic_examples`` are requests the
        app refuses (counted with the other domains, whatever they resemble)."""
        topics = [topic.strip() for topic in allowed_topics if topic.strip()]
        if not purpose.strip() or not topics:
            raise ConfigurationError("a topic guard needs a purpose and at least one allowed topic")
        self.purpose = purpose.strip()
        self.allowed_topics: tuple[str, ...] = tuple(topics)
        self.examples: tuple[str, ...] = tuple(example.strip() for example in examples if example.strip())
        self.off_topic_examples: tuple[str, ...] = tuple(
            example.strip() for example in off_topic_examples if example.strip()
        )
        self.threshold = float(threshold)
        self.general = is_general_policy(self.purpose, self.allowed_topics)
        self._space = space or text_space()
        # Each anchor remembers the allowed topic it stands for (None: the purpose or an example).
        anchors: list[tuple[str, str | None]] = [(self.purpose, None)]
        for topic in self.allowed_topics:
            anchors.append((topic, topic))
            anchors.extend((part, topic) for part in _topic_parts(topic))
        anchors.extend((example, None) for example in self.examples)
        features = self._space.features([text for text, _ in anchors])
        kept = [
            (anchor, feature) for anchor, feature in zip(anchors, features, strict=True) if not feature.empty
        ]
        self._anchor_topics = [topic for (_, topic), _ in kept]
        self._anchors = self._matrix([feature for _, feature in kept])
        self._topical = np.asarray([topic is not None for topic in self._anchor_topics], dtype=bool)
        references = self._space.features(list(OTHER_DOMAINS))
        reference_matrix = self._matrix(references)
        # A reference that resembles the policy (the pancake recipe for a cooking app) would
        # push the policy's own requests away; leave such references out.
        overlap = (reference_matrix @ self._anchors.T).max(axis=1) if len(self._anchors) else None
        keep = np.ones(len(references), dtype=bool) if overlap is None else overlap < REFERENCE_OVERLAP
        # The policy's own off-topic examples stay whatever they resemble: the operator said so.
        refused = [
            feature for feature in self._space.features(list(self.off_topic_examples)) if not feature.empty
        ]
        self._refused = self._matrix(refused)
        self._references = np.concatenate([reference_matrix[keep], self._refused])

    def _matrix(self, features: Sequence[TextFeatures]) -> NDArray[np.float32]:
        if not features:
            return np.zeros((0, self._space.dims), dtype=np.float32)
        return np.stack([feature.sentence for feature in features]).astype(np.float32)

    @classmethod
    def from_policy(
        cls,
        purpose: str,
        allowed_topics: Sequence[str],
        examples: Sequence[str] = (),
        *,
        off_topic_examples: Sequence[str] = (),
        threshold: float | None = None,
        space: TextSpace | None = None,
    ) -> TopicGuard:
        """A guard for an app with this purpose, these topics, these example (on-topic) requests and
        these example requests it refuses."""
        return cls(
            purpose,
            allowed_topics,
            examples,
            off_topic_examples=off_topic_examples,
            threshold=DEFAULT_THRESHOLD if threshold is None else threshold,
            space=space,
        )

    @classmethod
    def for_policy(cls, policy: Policy, *, threshold: float | None = None) -> TopicGuard:
        """A guard for a loaded :class:`~seawall.gateway.policy.Policy`: the user turns of its examples,
        on-topic ones as anchors and those answered with the ``off_topic_reply`` against the topic."""
        refused = [is_refusal_example(ex.assistant, policy.off_topic_reply) for ex in policy.examples]
        return cls.from_policy(
            policy.purpose,
            policy.allowed_topics,
            [ex.user for ex, off in zip(policy.examples, refused, strict=True) if not off],
            off_topic_examples=[ex.user for ex, off in zip(policy.examples, refused, strict=True) if off],
            threshold=threshold,
        )

    def check(self, text: str) -> TopicVerdict:
        """Whether ``text`` (the user's request) is on-topic."""
        return self.check_many([text])[0]

    def check_many(self, texts: Sequence[str]) -> list[TopicVerdict]:
        """:meth:`check` for several texts, sharing one tokenizer call and one matrix product."""
        if self.general:
            return [TopicVerdict(True, 1.0, None, "general_policy") for _ in texts]
        verdicts: list[TopicVerdict | None] = [
            TopicVerdict(True, 1.0, None, "small_talk") if is_small_talk(text) else None for text in texts
        ]
        pending = [index for index, verdict in enumerate(verdicts) if verdict is None]
        if pending:
            features = self._space.features([texts[index] for index in pending])
            for index, feature in zip(pending, features, strict=True):
                verdicts[index] = self._decide(feature)
        return [verdict for verdict in verdicts if verdict is not None]

    def _decide(self, feature: TextFeatures) -> TopicVerdict:
        if feature.empty:
            return TopicVerdict(True, 1.0, None, "no_content")
        anchor_similarity = self._anchors @ feature.sentence
        best_anchor = float(anchor_similarity.max()) if anchor_similarity.size else 0.0
        best_other = float((self._references @ feature.sentence).max()) if len(self._references) else 0.0
        score = best_anchor - best_other
        topical = np.where(self._topical, anchor_similarity, -np.inf)
        nearest = self._anchor_topics[int(np.argmax(topical))] if self._topical.any() else None
        best_refused = float((self._refused @ feature.sentence).max()) if len(self._refused) else -1.0
        on_topic = score >= self.threshold or (best_anchor >= CLEARLY_ON_TOPIC and best_anchor > best_refused)
        return TopicVerdict(on_topic, round(score, 4), nearest, "on_topic" if on_topic else "off_topic")
