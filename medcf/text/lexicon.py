"""Words of chest radiograph reports: finding phrases, modifier words and
ConText-style cue lists (negation, uncertainty, scope terminators).

Everything here is general radiology language, written from how radiologists
phrase chest radiograph reports, not from any benchmark report. Phrases are
space-separated tokens; each token is a regular expression matched against the
whole lower-cased spaCy token (so ``effusions?`` covers both numbers and
``-`` matches the hyphen spaCy splits off ``moderate-sized``).
"""

from __future__ import annotations

from medcf.vocab import ReportFinding as F
from medcf.vocab import Severity, Side, Zone

_LUNG = r"(lungs?|pulmonary)"
_HEART = r"(heart|cardiac|cardiomediastinal)"
_HEART_PART = r"(size|silhouette|shadow|contours?|diameter)"
_LINK = r"(is|are|appears?|remains?|seems?|was|has|been|become|becomes|now|again|slightly|stably|mildly|" \
        r"moderately|markedly|severely|minimally|significantly|not|no|longer|xxxx)"

#: canonical finding -> phrases. The longest phrase wins where two overlap, so
#: "subcutaneous emphysema" is never read as emphysema nor "pericardial effusion"
#: as a pleural effusion.
FINDING_PHRASES: dict[F, tuple[str, ...]] = {
    F.PLEURAL_EFFUSION: ("effusions?", "pleural effusions?", "pleural fluid", "hydrothorax", "hydropneumothorax"),
    F.CONSOLIDATION: ("consolidations?", "consolidative", "consolidated", "air space (disease|process|consolidation)",
                      "airspace (disease|process|consolidation)", "air - space (disease|process|consolidation)",
                      "alveolar (consolidation|disease)"),
    F.OPACITY: ("opacity", "opacities", "opacification", "opacified", "densit(y|ies)", "infiltrates?",
                "infiltration", "infiltrative"),
    F.ATELECTASIS: ("atelectasis", "atelectases", "atelectatic"),
    F.CARDIOMEGALY: (
        "cardiomegaly",
        f"{_HEART} {_HEART_PART}? {_LINK}? {_LINK}? {_LINK}? (enlarged|enlargement|large)",
        f"enlarged {_HEART} {_HEART_PART}?",
        f"enlargement of the {_HEART} {_HEART_PART}?",
        f"{_HEART} enlargement",
        f"borderline {_HEART}? {_HEART_PART}",
        "borderline (cardiomegaly|enlarged)",
        f"{_HEART} {_HEART_PART} {_LINK}? {_LINK}? borderline",
    ),
    F.PNEUMOTHORAX: ("pneumothorax", "pneumothoraces", "pneumothoraxes", "pleural air (collections?)?",
                     "air in the pleural space"),
    F.NODULE: ("nodules?",),
    F.MASS: ("mass", "masses", "mass - like"),
    F.EDEMA: ("edema", "oedema", "pulmonary edema", "interstitial edema"),
    F.PNEUMONIA: ("pneumonias?", "bronchopneumonia", "pneumonitis"),
    F.EMPHYSEMA: ("emphysema", "emphysematous", "bullous emphysema", "bullous emphysematous (changes?)?"),
    F.GRANULOMA: ("granulomas?", "granulomata", "granulomatous", "granulomatous (disease|changes?|process)",
                  "calcified granulomas?"),
    F.FRACTURE: ("fractures?", "fractured", "fx"),
    F.HYPERINFLATION: ("hyperinflat(ed|ion)", "hyperexpan(ded|sion)", "hyper - (inflated|inflation|expanded|"
                       "expansion)", "overinflat(ed|ion)", "hyperaerat(ed|ion)", "(hyperlucent|hyperlucency)"),
    F.LOW_LUNG_VOLUMES: ("(low|decreased|diminished|reduced) lung volumes?", "hypoinflat(ed|ion)",
                         "hypoventilat(ory|ion)", "(poor|poorly) inspiratory (effort|inflated)", "poor inspiration",
                         "shallow inspiration"),
    F.SCARRING: ("scar", "scars", "scarring", "cicatrix", "fibrotic scarring", "parenchymal scarring"),
    F.CALCIFICATION: ("calcifications?", "calcified lymph nodes?", "calcified (nodes?|plaques?)", "calcinosis"),
    F.VASCULAR_CONGESTION: ("(vascular|venous|pulmonary) congestion", "congestion", "cephalization",
                            "pulmonary venous hypertension"),
    F.PLEURAL_THICKENING: ("pleural thickening", "pleural - parenchymal thickening", "pleural plaques?"),
    F.PERICARDIAL_EFFUSION: ("pericardial effusions?",),
    F.SUBCUTANEOUS_EMPHYSEMA: ("subcutaneous (emphysema|air|gas)", "soft tissue emphysema"),
    F.HIATAL_HERNIA: ("hiatal hernias?", "hiatus hernias?"),
    F.FIBROSIS: ("fibrosis", "fibrotic (changes?)", "interstitial fibrosis", "pulmonary fibrosis"),
    # A bulla is an air space in the lung; bullous emphysema is emphysema, bullae alone are not.
    F.BULLA: ("bulla", "bullae", "bullous (lung)? (changes?|disease)", "blebs?"),
    F.COPD: ("copd", "chronic obstructive (pulmonary|lung|airways?) disease"),
}

#: Label of phrases that contain a finding word but name something else. They are matched (the
#: longest match wins, as for "pericardial effusion") only so that their finding word is not read:
#: "mass effect" is a push on a structure, not a mass; edema of the soft tissues or chest wall is
#: not pulmonary edema, which is what "edema" means in a chest report (issue 23).
NOT_A_FINDING = "not_a_finding"
NOT_A_FINDING_PHRASES: tuple[str, ...] = (
    "mass effect", "(soft|subcutaneous) (tissue|tissues)? edema", "soft - tissue edema",
    "chest wall edema",
)

#: Findings that have no side or lung zone (side words near them describe something else).
NO_LOCATION = frozenset({F.CARDIOMEGALY, F.HYPERINFLATION, F.LOW_LUNG_VOLUMES, F.COPD, F.HIATAL_HERNIA,
                         F.PERICARDIAL_EFFUSION})

#: Words that place a finding in the lung. "Density" is an opacity only with one of them in its
#: sentence: radiologists also call a rib callus, a stent, fat or a hernia a "density"
#: ("density overlying the left 4th rib", "densities over the heart").
LUNG_PLACE_WORDS = frozenset({
    "lung", "lungs", "pulmonary", "lobe", "lobes", "lobar", "base", "bases", "basilar", "bibasilar", "basal",
    "bibasal", "apex", "apices", "apical", "biapical", "lingula", "lingular", "hilum", "hila", "hilar",
    "perihilar", "parahilar", "infrahilar", "suprahilar", "midlung", "retrocardiac", "costophrenic",
    "airspace", "parenchyma", "parenchymal", "rul", "rml", "rll", "lul", "lll",
})

#: Bones a chest radiograph does not show. Reports sometimes cover several exams ("Pelvis and left
#: hip: ... fracture"); a fracture whose sentence names only such a bone is not a finding of the
#: chest image (issue 23). Shoulder, humerus, clavicle, scapula, ribs, sternum and spine are in
#: the chest film and stay.
NON_CHEST_BONE_WORDS = frozenset({
    "hip", "hips", "femur", "femoral", "femoris", "subcapital", "intertrochanteric", "trochanteric", "pelvis",
    "pelvic", "acetabulum", "acetabular", "pubic", "ischial", "iliac", "sacrum", "sacral", "coccyx", "knee",
    "patella", "tibia", "tibial", "fibula", "fibular", "ankle", "foot", "feet", "toe", "calcaneus", "wrist",
    "hand", "finger", "radius", "radial", "ulna", "ulnar", "elbow", "forearm", "skull", "mandible", "facial",
    "nasal", "orbital",
})
CHEST_BONE_WORDS = frozenset({
    "rib", "ribs", "clavicle", "clavicles", "clavicular", "scapula", "scapulae", "scapular", "sternum",
    "sternal", "humerus", "humeral", "shoulder", "shoulders", "spine", "spinal", "vertebra", "vertebrae",
    "vertebral", "thoracic", "costal", "chest",
})

# --- modifiers: token (lower case) -> value -------------------------------------------------

SIDE_WORDS: dict[str, Side] = {
    "left": Side.LEFT, "right": Side.RIGHT, "bilateral": Side.BILATERAL, "bilaterally": Side.BILATERAL,
    "both": Side.BILATERAL, "bibasilar": Side.BILATERAL, "bibasal": Side.BILATERAL,
    "biapical": Side.BILATERAL, "bibasally": Side.BILATERAL,
    "rul": Side.RIGHT, "rml": Side.RIGHT, "rll": Side.RIGHT, "lul": Side.LEFT, "lll": Side.LEFT,
    "lingula": Side.LEFT, "lingular": Side.LEFT,
}
#: Side words that only hint (used when no explicit side word is near): the
#: retrocardiac lung is the left lower lobe; "the lungs", "the bases", "the apices" are both.
SIDE_HINTS: dict[str, Side] = {"retrocardiac": Side.LEFT, "lungs": Side.BILATERAL, "bases": Side.BILATERAL,
                                "apices": Side.BILATERAL}

ZONE_WORDS: dict[str, Zone] = {
    "upper": Zone.UPPER, "apex": Zone.UPPER, "apices": Zone.UPPER, "apical": Zone.UPPER,
    "biapical": Zone.UPPER, "apically": Zone.UPPER, "rul": Zone.UPPER, "lul": Zone.UPPER,
    "middle": Zone.MIDDLE, "mid": Zone.MIDDLE, "midlung": Zone.MIDDLE, "lingula": Zone.MIDDLE,
    "lingular": Zone.MIDDLE, "rml": Zone.MIDDLE, "perihilar": Zone.MIDDLE, "hilar": Zone.MIDDLE,
    "hilum": Zone.MIDDLE, "hila": Zone.MIDDLE, "parahilar": Zone.MIDDLE, "suprahilar": Zone.MIDDLE,
    "lower": Zone.LOWER, "base": Zone.LOWER, "bases": Zone.LOWER, "basal": Zone.LOWER,
    "basilar": Zone.LOWER, "bibasilar": Zone.LOWER, "bibasal": Zone.LOWER, "bibasally": Zone.LOWER,
    "basally": Zone.LOWER, "rll": Zone.LOWER, "lll": Zone.LOWER, "retrocardiac": Zone.LOWER,
    "infrahilar": Zone.LOWER, "costophrenic": Zone.LOWER,
}

SEVERITY_WORDS: dict[str, Severity] = {
    **dict.fromkeys(("mild", "mildly", "minimal", "minimally", "small", "smaller", "trace", "tiny",
                     "borderline", "slight", "slightly", "minor", "subtle", "little"), Severity.MILD),
    **dict.fromkeys(("moderate", "moderately"), Severity.MODERATE),
    **dict.fromkeys(("large", "larger", "severe", "severely", "massive", "marked", "markedly", "extensive",
                     "huge", "substantial", "gross", "grossly"), Severity.SEVERE),
}

#: Tokens that end a modifier's reach after a finding ("effusion on the left, with ...").
POST_STOP = frozenset({",", ";", ":", "but", "however", "with", "which", "without", "whereas", "while",
                       "and", "or", "versus", "vs"})
#: Sentence openings that point back to the previous sentence's finding ("These opacities have
#: increased", "The appearance suggests atelectasis"): its findings without a place take that place.
ANAPHORA_WORDS = frozenset({"this", "these", "that", "those", "it", "they", "which"})
ANAPHORA_PHRASES = frozenset({"the appearance", "the finding", "the findings", "the opacity", "the opacities",
                              "this finding", "these findings"})
#: Tokens that end the phrase directly before a finding: "small effusions, small on the left,
#: with left basilar atelectasis" - the atelectasis is read from "left basilar" first.
PRE_BREAK = frozenset({",", ";", ":", "with", "without", "but", "however", "which", "while", "whereas"})
#: Words that join two findings into one list that shares a place after it
#: ("atelectasis or infiltrate in the right base"; "atelectasis and/or infiltrate").
COORDINATION = frozenset({"and", "or", "and/or", "/", ",", "versus", "vs"})
#: Words between two findings that make the second describe the first ("left basilar
#: opacity, likely atelectasis"; "atelectasis versus pneumonia"), so it inherits the location.
LINKING = frozenset({"likely", "represent", "represents", "representing", "consistent", "compatible",
                     "suggest", "suggests", "suggestive", "suggesting", "reflect", "reflects", "reflecting",
                     "due", "may", "could", "concerning", "suspicious", "or", "versus", "vs", "probably",
                     "possibly", "possible", "favor", "favored", "favoring", "either", "from", "secondary",
                     "related", "which", "with", "and", "/", "and/or"})

# --- ConText cue lists (negspacy termsets) ---------------------------------------------------

#: Adverbs radiologists put inside an exclusion hedge ("cannot be entirely excluded"). The hedge
#: is the same with or without them; a cue list that only has the bare form reads the longer one
#: as certain, or even as absent ("cannot be completely ruled out" ends in the negation "ruled out").
_HEDGE_ADVERBS = ("entirely", "completely", "totally", "definitely", "definitively", "fully", "absolutely")


def _with_adverbs(phrases: tuple[str, ...]) -> list[str]:
    """Each "cannot be excluded"-style phrase, bare and with an adverb before its last word."""
    out = []
    for phrase in phrases:
        head, last = phrase.rsplit(" ", 1)
        if last == "out":  # "ruled out": the adverb goes before the verb
            head, last = phrase.rsplit(" ", 2)[0], " ".join(phrase.split()[-2:])
        out += [phrase, *(f"{head} {adverb} {last}" for adverb in _HEDGE_ADVERBS)]
    return out


#: "X cannot be excluded" and its kin, hedges that follow the finding. In the negation table they
#: are pseudo-negations (the "not"/"ruled out" inside them does not negate); in the uncertainty
#: table they hedge.
_EXCLUSION_HEDGES = _with_adverbs(("cannot be excluded", "can not be excluded", "not excluded", "not be excluded",
                                   "cannot be ruled out", "can not be ruled out", "not ruled out",
                                   "not be ruled out"))

NEGATION_TERMSET: dict[str, list[str]] = {
    "pseudo_negations": [
        "no change", "no significant change", "no interval change", "no definite change", "not change",
        "no increase", "not only", "no new", "without change", "not significantly changed",
        "cannot exclude", "can not exclude", "cannot rule out", "can not rule out",
        *_EXCLUSION_HEDGES, "difficult to exclude", "no longer", "not well",
        "not clearly", "not certain", "not definitely",
        # partly gone is still there: "partial resolution of the effusion" is an effusion
        "partial resolution of", "partially resolved", "incomplete resolution of",
    ],
    "preceding_negations": [
        "no", "not", "without", "absent", "absence of", "negative for", "free of", "clear of",
        "no evidence of", "no evidence for", "no signs of", "no sign of", "no findings of",
        "no radiographic evidence of", "without evidence of", "without radiographic evidence of",
        "resolution of", "resolved", "interval resolution of", "removal of", "rule out", "ruled out",
        "negative", "none", "nor", "neither", "clear", "no definite", "no convincing", "no suspicious",
        "no focal", "no acute", "no visible", "no obvious", "not identified", "no residual",
        "nothing to suggest", "no typical findings of", "no findings to suggest",
        # the rejected side of a comparison: "atelectasis rather than pneumonia" names no pneumonia
        "rather than", "instead of", "as opposed to",
        # the patient's history is not this image: "history of pneumonia" (ConText's historical cue)
        "history of", "hx of", "h/o",
        # historical: "On the previous CT, the right upper lobe was consolidated." is not this image
        *(f"on {a}{b}" for a in ("", "a ", "the ") for b in ("previous", "prior", "old", "outside", "earlier")),
    ],
    "following_negations": [
        "not seen", "not identified", "not present", "not visualized", "not demonstrated", "not evident",
        "not appreciated", "not noted", "not detected", "not visible", "is absent", "are absent",
        "not be demonstrated", "not be seen", "not be visualized", "not be detected", "not be identified",
        "not be evident", "not be appreciated",
        "has resolved", "have resolved", "resolved", "no longer seen", "no longer visualized",
        "no longer present", "no longer identified", "no longer evident", "no longer apparent",
        "is gone", "have cleared", "has cleared", "has been removed", "ruled out", "is not enlarged",
        "are not enlarged",
    ],
    "termination": [
        "but", "however", "although", "though", "except", "aside from", "apart from", "other than",
        "which", "whereas", "while", "yet", "otherwise", "nevertheless", "there is", "there are", "with",
        ";", "consistent with", "likely", "probably",
    ],
}

UNCERTAINTY_TERMSET: dict[str, list[str]] = {
    # "age-indeterminate fracture": the age is uncertain, not the fracture.
    "pseudo_negations": ["no change", "not change", "not certain whether", "without", "age-indeterminate",
                         "age indeterminate", "indeterminate age", "of indeterminate age"],
    "preceding_negations": [
        "possible", "possibly", "probable", "probably", "likely", "most likely", "may", "might", "could",
        "question of", "questionable", "questionably", "suspicious for", "suspected", "suspect",
        # every form of the verb: "calcifications suggest a previous granulomatous process" hedges
        # as "suggests" does
        "suggestive of", "suggest", "suggests", "suggesting", "concerning for", "concern for", "worrisome for",
        "cannot exclude", "can not exclude", "cannot rule out", "can not rule out", "difficult to exclude",
        "not excluded", "differential", "differential diagnosis", "versus", "vs", "either",
        "presumably", "presumed", "equivocal", "indeterminate", "borderline for", "suggestion of",
        "favor", "favored", "favors", "could represent", "may represent", "may reflect", "might represent",
        "may be compatible with", "may be consistent with", "could be compatible with",
        "could be consistent with", "might be compatible with", "might be consistent with",
        "possibly compatible with", "possibly consistent with", "probably consistent with",
        "uncertain", "not certain", "questioned", "evaluate for", "to exclude", "to rule out",
        "rule out", "question", "?",
        # "represents" ends a hedge's scope (it opens a characterisation); inside these longer cues
        # it does not, so "opacity likely represents atelectasis" hedges the atelectasis as
        # "likely represent" already did
        *(f"{h} {v}" for h in ("likely", "most likely", "probably", "possibly")
          for v in ("represents", "representing")),
        # a possibility, a doubt or a consideration is not an observation
        "possibility of", "the possibility", "doubtful for", "consider", "considerations include",
        "considerations would include", "consideration of",
    ],
    "following_negations": [
        *_EXCLUSION_HEDGES, "difficult to exclude", "hard to exclude", "difficult to rule out",
        "is doubtful", "are doubtful", "is a consideration", "is favored", "are favored",
        "is possible", "are possible",
        "is likely", "are likely", "is suspected", "are suspected", "?",
        "versus", "vs", "is questioned", "not certain", "less likely", "unlikely",
    ],
    "termination": [
        "but", "however", "although", "though", "which", "whereas", "while", "yet", "no", "without",
        "there is", "there are", ";",
        # "and" does not end a hedge ("differential includes pneumonia and mass" hedges both, as
        # one negation cue covers a list). A characterisation opens its own scope: "left opacity,
        # likely atelectasis versus pneumonia" leaves the opacity certain.
        "likely", "probably", "possibly", "may", "could", "concerning", "suspicious", "suggestive",
        "consistent with", "compatible with", "representing", "represents",
    ],
}
