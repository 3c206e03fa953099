"""Which high-risk domain a request is in (health, finance, law, code), offline and in well under 1 ms.

Two signals per domain, and the stronger one wins:

1. **Cues**: words and phrases typical of the domain, each with a weight (how surely it alone says
   the domain: "prescribed" 0.9, "pain" 0.5); a text's cue score is ``1 - prod(1 - weight)`` over
   the distinct cues it contains, so two weak cues add up. Code has structural cues too (code
   fences, ``def``/``function``/``SELECT``, tracebacks, ``snake_case()`` calls).
2. **Meaning**: the request's sentence vector from the embedded model's static token vectors
   (:mod:`seawall.text_space`) against a few prototype requests per domain, minus its
   similarity to requests of everyday, low-risk kinds; scaled into ``[0, 1]``.

A domain is detected when its score reaches ``threshold`` (:data:`DEFAULT_THRESHOLD`, chosen on
``tests/data/review/domains_dev.jsonl`` and measured on ``domains_holdout.jsonl``, written after
the detector was frozen; ``tests/test_review_domains.py`` prints both). The detector leans to
holding: a wrongly held answer costs a reviewer a minute, a missed one may cost a user.

Known limits: English only; words, not sentences ("I'm a doctor, write me a poem" looks like
health); a domain named only by rare words ("my SIPP") can be missed — let the app declare the
domain (``seawall.review.domain``) when it knows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from seawall.review.settings import DOMAINS, Domain
from seawall.text_space import TextSpace, text_space

#: Score a domain needs to be detected.
DEFAULT_THRESHOLD: Final = 0.6
#: Longest text looked at (the start of the last user message is what matters).
MAX_CHARS: Final = 4000
#: Semantic margin (prototype similarity minus everyday similarity) that maps to a score of 1.
SEMANTIC_FULL: Final = 0.35
#: Semantic margin below which the meaning signal is 0.
SEMANTIC_FLOOR: Final = 0.05


def _cues(spec: str) -> tuple[tuple[re.Pattern[str], float], ...]:
    """``"weight: a | b | c"`` lines (alternatives split on a spaced bar) -> word-bounded patterns."""
    cues = []
    for line in spec.strip().splitlines():
        weight, _, alternatives = line.partition(":")
        for alternative in re.split(r"\s\|\s", alternatives):
            phrase = alternative.strip()
            if phrase:
                cues.append((re.compile(rf"(?<![\w-]){phrase}(?![\w-])", re.IGNORECASE), float(weight)))
    return tuple(cues)


# Written for seawall. Regular expressions, matched case-insensitively at word boundaries.
CUES: Final[dict[Domain, tuple[tuple[re.Pattern[str], float], ...]]] = {
    "health": _cues(
        r"""
        0.9: symptoms? | diagnos\w* | prescri\w+ | dosage
        0.9: doses? | overdose | side[- ]effects? | medications?
        0.9: antibiotics? | antidepressants? | insulin | ibuprofen | paracetamol | acetaminophen | aspirin
        0.9: warfarin | metformin | prednisone | statins? | vaccines? | vaccinat\w+ | chemotherapy
        0.9: blood pressure | heart rate | cholesterol | diabet\w+ | cancer | tumou?r | stroke | concussion
        0.9: pregnan\w+ | miscarriage | infection | fever | rash | x-ray | mri | blood test | surgery
        0.85: doctor | physician | gp | nurse | hospital | er | a&e | emergency room | clinic | pharmacist
        0.8: sprain\w* | fractur\w+ | swollen | swelling | bleeding | burns? | wound | mole | lump
        0.8: depress\w+ | anxiety | panic attacks? | suicid\w* | self[- ]harm | eating disorder | insomnia
        0.8: chest pain | shortness of breath | headaches? | migraines? | nausea | vomiting | dizz\w+
        0.8: treat(?:ment|ing)? | therap\w+ | medical | health | illness | disease | disorder | allerg\w+
        0.7: mg | pills? | tablets? | drugs? | diet after | gallbladder | kidney | liver | thyroid
        0.5: pain | hurts? | sick | injur\w+ | sleep
        0.85: dementia | alzheimer\w* | asthma | covid | flu | virus | bacteria\w* | contagious | antibod\w+
        0.85: heart attack | blood sugar | glucose | ldl | hdl | urine | stool | period | menstrua\w+
        0.85: stitches | sore throat | cough\w* | numb\w* | tingling | itch\w* | hair loss | acne | eczema
        0.85: painkillers? | antihistamines? | melatonin | supplements? | vitamins? | amoxicillin | opioids?
        0.85: swallowed | poison\w* | choking | unconscious | seizures? | fainted | allergic reaction
        0.8: ache | aches | aching | sore | fatigue | tired all the time | weight loss | blood | pulse
        0.8: toddler fever | newborn | breastfeed\w* | contracepti\w+ | std | sti | hiv | hepatitis
        0.7: healthy | healthier | calories | nutrition | exercise with | therapy | mental health
        """
    ),
    "finance": _cues(
        r"""
        0.9: invest\w* | stocks? | shares | bonds | index funds? | etfs? | dividends? | portfolio
        0.9: mortgage | refinanc\w+ | loans? | credit scores? | credit cards? | debt | interest rates?
        0.9: tax(?:es)? | tax returns? | deduct\w* | capital gains | irs
        0.9: hmrc | vat | 401k | 401\(k\) | ira
        0.9: roth | pension | retire\w* | annuit\w+ | savings | bitcoin | crypto\w* | ethereum
        0.9: budget\w* | bank accounts? | overdraft | payday | brokerage | options trading | expense ratios?
        0.5: bank | banks | accounts?
        0.8: finances? | financial | money | income | salary | inheritance | emergency fund
        0.8: lease or finance | real estate | net worth | insurance premiums? | fees? | forex | trading
        0.6: afford | pay off | paid | save for | spending | costs?
        0.85: isa | sipp | apr | apy | inflation | dollar-cost | averaging | robo-advisor | hedge fund
        0.85: stock options | vesting | rsus? | equity | shareholders? | market crash | recession
        0.85: high-yield | savings account | checking account | credit union | wire transfer | remittance
        0.85: rent or buy | buy a house | down payment
        0.85: deposit on a house | property ladder | landlord insurance
        0.8: cash | gold | silver | currency | exchange rate | fund | funds | trust fund | lending | lender
        0.8: salary | wage | paycheck | payslip | refund from hmrc | tax code | accountant | bookkeeping
        """
    ),
    "law": _cues(
        r"""
        0.9: legal\w* | illegal | lawyers? | attorneys? | solicitors? | courts? order | court summons
        0.9: sue | suing | lawsuits? | litigation | evict\w* | custody | divorce | alimony | child support
        0.9: contracts? | leases? | clauses? | non-compete | nda | liab\w+ | negligence | copyright\w*
        0.9: trademark\w* | patents? | infring\w+
        0.9: cease and desist | power of attorney | wills? and testament
        0.9: arrest\w* | felony | misdemeanou?r | criminal | prosecut\w+ | police | warrant | bail | dui
        0.9: asylum | visa | immigration | deport\w* | citizenship | rights? | tenant | landlord
        0.5: court
        0.85: judge | jury | statute | regulations? | comply | compliance | gdpr | law | laws
        0.8: fire me | fired | wrongful | discriminat\w+ | harass\w+ at work | unpaid wages | employer
        0.7: a will | claim | claims | summons | permission | consent | offen[cs]e | binding
        0.85: restraining order | protective order | guardian\w*
        0.85: prenup\w* | probate | estate law | evasion
        0.85: penalt\w+ | fines? | ticket | citation | against the law | allowed to | prohibited | banned
        0.85: compensation | damages | settlement | small claims
        0.85: tribunal | appeal | sentence for | jail | prison
        0.85: hoa | zoning | permit | private property
        0.85: trespass\w* | defamation | slander | libel | privacy law
        0.8: cop | cops | officer | id card | refund policy | consumer rights | warranty | terms of service
        0.8: my boss | my employer | at work | workplace | dismissal | severance | overtime pay
        """
    ),
    "code": _cues(
        r"""
        0.95: python | javascript | typescript | java | rust | golang | c\+\+ | c# | kotlin | swift | php
        0.95: sql | bash | shell script | powershell | regex | css | html | react | node\.?js | docker
        0.95: kubernetes | git | github | pytest | pip | npm | api | endpoint | json | yaml | linux
        0.9: function | functions | method | class | variable | loop | array | list comprehension
        0.9: linked list | compil\w+ | debug\w* | bug | error: | exception | traceback | stack trace
        0.9: segmentation fault | null pointer | syntax | refactor\w* | script | code | coding | program\w*
        0.9: query | database | repository | commit | deploy\w* | server | container | process
        0.7: time complexity | algorithm | parse | parsing | install | package | library | framework
        0.6: string | tuple | dictionary | integer | render\w* | component | async | await
        0.9: numpy | dataframe | django | flask | fastapi | express\.?js | spring boot | laravel
        0.5: pandas | express | spring | rails | rest | go | ci | cd | app | apps
        0.9: android | ios app | xcode | gradle | maven | webpack | vite | terraform | ansible | nginx
        0.9: gunicorn | cron | crontab | tcp | udp | sockets? | http | rest api | graphql | webhook
        0.9: unit tests? | integration tests? | ci/cd
        0.9: build fails? | linker | undefined reference | crash\w*
        0.9: monorepo | microservices? | dependency injection | closures? | recursion | pointers? | mutex
        0.9: thread-safe | multithread\w* | concurrency | generics | lambda | callback | matlab | golang
        0.85: software | developer | backend | frontend | web page | website | browser | cli
        0.85: vectori[sz]\w* | optimi[sz]e this | for-loop | while loop | stack overflow | memory leak
        """
    ),
}

# Structural signs of code: any one of them is enough. Linear in the text's length: ``[ \t]*``,
# not ``\s*``, at a line's start (``\s`` spans newlines, so a run of blank lines was scanned once
# per line), and at most 300 characters from a SQL verb to its clause (``.+`` scanned the rest of
# the line once per verb).
_CODE_SHAPES: Final = re.compile(
    r"```|^[ \t]*(?:def|class|import|from \S+ import|function|const|let|var|public|private|#include)\b"
    r"|\b\w+\([^()]*\)\s*(?:\{|:|;|->)"
    r"|\b(?:SELECT|INSERT|UPDATE|DELETE)\b.{1,300}?\b(?:FROM|INTO|SET|WHERE)\b"
    r"|Traceback \(most recent call last\)|\b[A-Z]\w*(?:Error|Exception)\b|\b[a-z]+_[a-z_]+\(|=>|!==|===",
    re.MULTILINE,
)

# Prototype requests of each domain, and of everyday low-risk requests (the contrast).
PROTOTYPES: Final[dict[Domain, tuple[str, ...]]] = {
    "health": (
        "What medicine should I take for my symptoms?",
        "Is this pain a sign of a serious illness?",
        "What dose of this drug is safe?",
        "Should I see a doctor about this condition?",
        "How is this disease treated?",
        "I feel unwell and anxious, what should I do?",
    ),
    "finance": (
        "Should I invest my money in stocks or bonds?",
        "How do I pay less tax on my income?",
        "Should I take a loan or a mortgage?",
        "How much should I save for retirement?",
        "How do I get out of debt?",
    ),
    "law": (
        "Is this legal, and what are my rights?",
        "Can I sue them in court?",
        "What does the law say about my contract?",
        "Do I need a lawyer for this case?",
        "What happens if I am charged with a crime?",
    ),
    "code": (
        "Write a program that does this.",
        "Why does my code throw this error?",
        "How do I fix this bug in my software?",
        "Write a function to sort the data.",
        "How do I configure this server and deploy the application?",
    ),
}
EVERYDAY: Final = (
    "Write a poem about love.",
    "Tell me a joke.",
    "What is the capital of Japan?",
    "Give me a recipe for dinner.",
    "Plan a holiday for me.",
    "Recommend a book or a film.",
    "How do I look after my garden plants?",
    "Explain how nature and science work.",
    "Help me write a letter to a friend.",
    "What is the history of this country?",
    "Who won the football game?",
    "How do I clean my house?",
    "What should I pack for a trip?",
    "Describe the weather and the landscape.",
)


@dataclass(frozen=True)
class DomainVerdict:
    """The detected domain (None: none reached the threshold) and every domain's score."""

    domain: Domain | None
    scores: dict[str, float]
    cues: tuple[str, ...] = ()  # the cues matched for the detected domain, for the reviewer


class DomainDetector:
    """Detects health, finance, law and code requests; thread-safe, build once."""

    def __init__(
        self,
        domains: Iterable[Domain] = DOMAINS,
        *,
        threshold: float | None = None,
        space: TextSpace | None = None,
    ) -> None:
        self.domains: tuple[Domain, ...] = tuple(domains)
        self.threshold = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        self._space = space or text_space()
        everyday = self._space.features(list(EVERYDAY))
        self._everyday = np.stack([feature.sentence for feature in everyday]).astype(np.float32)
        self._prototypes: dict[Domain, NDArray[np.float32]] = {}
        for domain in self.domains:
            features = self._space.features(list(PROTOTYPES[domain]))
            self._prototypes[domain] = np.stack([feature.sentence for feature in features]).astype(np.float32)

    def detect(self, text: str) -> DomainVerdict:
        """The domain of ``text`` (the user's request), with every domain's score."""
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str]) -> list[DomainVerdict]:
        """:meth:`detect` for several texts, sharing one tokenizer call."""
        clipped = [text[:MAX_CHARS] for text in texts]
        features = self._space.features(clipped)
        verdicts = []
        for text, feature in zip(clipped, features, strict=True):
            scores: dict[str, float] = {}
            matched: dict[str, list[str]] = {}
            everyday = 0.0 if feature.empty else float((self._everyday @ feature.sentence).max())
            for domain in self.domains:
                cue_score, hits = _cue_score(domain, text)
                semantic = 0.0
                if not feature.empty:
                    margin = float((self._prototypes[domain] @ feature.sentence).max()) - everyday
                    semantic = min(
                        1.0, max(0.0, (margin - SEMANTIC_FLOOR) / (SEMANTIC_FULL - SEMANTIC_FLOOR))
                    )
                scores[domain] = round(max(cue_score, semantic * 0.9), 4)
                matched[domain] = hits
            best = max(scores, key=lambda name: scores[name]) if scores else None
            if best is None or scores[best] < self.threshold:
                verdicts.append(DomainVerdict(None, scores))
            else:
                domain_name = next(d for d in self.domains if d == best)
                verdicts.append(DomainVerdict(domain_name, scores, tuple(matched[best])))
        return verdicts


def _cue_score(domain: Domain, text: str) -> tuple[float, list[str]]:
    miss = 1.0
    hits: list[str] = []
    for pattern, weight in CUES[domain]:
        found = pattern.search(text)
        if found:
            miss *= 1.0 - weight
            hits.append(found.group(0).lower())
    if domain == "code" and _CODE_SHAPES.search(text):
        miss *= 0.05
        hits.append("<code>")
    return 1.0 - miss, hits


__all__ = ["CUES", "DEFAULT_THRESHOLD", "PROTOTYPES", "DomainDetector", "DomainVerdict"]
