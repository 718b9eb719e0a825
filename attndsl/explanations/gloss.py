"""A gloss per program: one plain-English sentence generated from the IR.

`gloss(program)` reads each term's analysis (`attndsl.explanations.anatomy`) and says
where it points ("the previous token", "the token after the previous copy of
the current token") and when ("when the current token is punctuation").
Given the terms' shares of the row mass (`attndsl.explanations.categories.measure_shares`),
the sentence leads with the largest share and gives each one as a
percentage:

    "72 % on the first token; otherwise the previous token (25 %), the most
    recent punctuation mark (3 %)."

Without shares it follows the program's own order and weights:

    "The first token (weight 0.7) and the previous token (weight 0.3)."

No language model is involved: the same program always gets the same words.
"""
from __future__ import annotations

from attndsl.language import ir
from attndsl.explanations.anatomy import TermKind, describe_term, repr_text

#: at most this many parts are named; the rest are counted
MAX_PARTS = 3
#: shares below this are left out of the sentence (but counted)
MIN_SHARE = 0.01

_FALLBACK_PHRASE = {
    "first": "the first token",
    "self": "the token itself",
    "previous": "the previous token",
    "uniform": "every token evenly",
}


def _listed(words: tuple[str, ...], limit: int = 4) -> str:
    shown = [repr_text(w) for w in words[:limit]]
    if len(words) > limit:
        return ", ".join(shown) + f" or {len(words) - limit} more"
    if len(shown) <= 1:
        return "".join(shown)
    return ", ".join(shown[:-1]) + " or " + shown[-1]


def _select(kind: TermKind, one: str, first: str, many: str, plain: str | None = None) -> str:
    match kind.selection:
        case "nearest":
            return one
        case "first":
            return first
        case "spread":
            return many
    return plain if plain is not None else many


def term_phrase(kind: TermKind) -> str:
    """Where one term points, as a noun phrase (no qualifiers)."""
    non = "non-" if kind.negated else ""
    match kind.kind:
        case "sink":
            return "the first token"
        case "self":
            return "the token itself"
        case "previous":
            return "the previous token"
        case "offset":
            return f"the token {kind.offset} back"
        case "local":
            what = "recent word starts" if "wordstart" in kind.tags else "recent tokens"
            if kind.window is not None:
                what = f"the last {kind.window + 1} {'word starts' if 'wordstart' in kind.tags else 'tokens'}"
            if kind.decays:
                what += ", fading with distance"
            if kind.excludes_sink:
                what += " (not the first token)"
            return what
        case "induction":
            return _select(kind, "the token after the previous copy of the current token",
                           "the token after the first copy of the current token",
                           "the tokens after earlier copies of the current token")
        case "duplicate":
            if kind.feature == "sim":
                return "earlier tokens spelled like the current one"
            case_note = " (ignoring case)" if kind.feature in ("same_lower", "lower") else ""
            return _select(kind, "the previous copy of the current token", "the first copy of the current token",
                           "earlier copies of the current token") + case_note
        case "punctuation":
            if kind.words:
                listed = _listed(kind.words)
                return _select(kind, f"the most recent {listed}", f"the first {listed}", f"every {listed}",
                               f"{'tokens other than' if kind.negated else 'the tokens'} {listed}")
            mark = "line break" if kind.feature == "newline" else "punctuation mark"
            return _select(kind, f"the most recent {non}{mark}", f"the first {non}{mark}", f"every {non}{mark}",
                           f"{non}{mark}s")
        case "lexical":
            listed = _listed(kind.words)
            return _select(kind, f"the most recent of {listed}", f"the first of {listed}", f"every {listed}",
                           f"{'words other than' if kind.negated else 'the words'} {listed}")
        case "sentence":
            return _select(kind, "the most recent token of the current sentence", "the start of the current sentence",
                           "the tokens of the current sentence", "the current sentence")
        case "word":
            if kind.feature == "word_start" and "word" not in kind.tags:
                return _select(kind, "the most recent word start", "the first word start", "every word start",
                               "word starts")
            return _select(kind, "the current word's latest piece", "the start of the current word",
                           "all pieces of the current word", "the current word")
        case "syntactic":
            if kind.words:
                label = "dependency label" if kind.feature == "dep" else "part of speech"
                return _select(kind, f"the most recent token whose {label} is {_listed(kind.words)}",
                               f"the first token whose {label} is {_listed(kind.words)}",
                               f"every token whose {label} is {_listed(kind.words)}",
                               f"tokens whose {label} is {_listed(kind.words)}")
            return "the syntactic head or dependents"
        case "uniform":
            return "every token but the first, evenly" if kind.excludes_sink else "every token evenly"
    return "other keys (a pattern the gloss has no words for; see the program)"


def term_text(kind: TermKind) -> str:
    """The phrase plus its "when …" qualifiers."""
    phrase = term_phrase(kind)
    if kind.query_conditions:
        phrase += " when " + " and ".join(kind.query_conditions)
    return phrase


def _pct(share: float) -> str:
    value = share * 100
    return f"{value:.0f} %" if value >= 1 else "<1 %"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def gloss(program: ir.Program, shares=None) -> str:
    """One sentence saying what ``program`` attends to (see the module docstring).

    ``shares``: an `attndsl.explanations.categories.ProgramShares` for this program, or None.
    """
    if shares is not None:
        return _gloss_shares(program, shares)
    kinds = [describe_term(t) for t in program.terms]
    if not kinds:
        return f"{_capital(_FALLBACK_PHRASE[program.fallback])} (the program has no terms)."
    parts = []
    softmax = program.form == "softmax"
    for term, kind in zip(program.terms, kinds):
        text = term_text(kind)
        if softmax:  # weights are additive preferences (logits), so their sign matters
            parts.append(f"{text} ({_logit(term.weight)})")
        else:
            parts.append(text if len(kinds) == 1 else f"{text} (weight {_weight(term.weight)})")
    sentence = ("a softmax preferring " + _join(parts)) if softmax else _join(parts)
    if program.masks:
        sentence += ", " + _join([_mask_text(m) for m in program.masks])
    if program.fallback != "first" or all(k.selection == "nearest" for k in kinds):
        sentence += f"; where nothing matches, {_FALLBACK_PHRASE[program.fallback]}"
    return _capital(sentence) + "."


def _weight(value: float) -> str:
    return f"{value:g}"


def _logit(value: float) -> str:
    return f"logit {value:+g}"


def _mask_text(mask) -> str:
    """'only over …' for one mask factor (an indicator or a selection), in the term vocabulary."""
    kind = describe_term(ir.Term(1.0, (mask,)))
    if kind.kind in ("other", "uniform", "broad"):  # no plainer words than the program's own condition
        return "only over the keys its mask admits"
    return f"only over {term_text(kind)}"


def _join(parts: list[str]) -> str:
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _gloss_shares(program: ir.Program, shares) -> str:
    merged: dict[str, float] = {}
    for t in shares.ranked():
        if t.kind is None:
            text = _FALLBACK_PHRASE[program.fallback]
            if text not in merged:
                text += " when nothing matches"
        else:
            text = term_text(t.kind)
        merged[text] = merged.get(text, 0.0) + t.share
    ranked = sorted(merged.items(), key=lambda kv: -kv[1])
    named = [(text, share) for text, share in ranked if share >= MIN_SHARE][:MAX_PARTS] or ranked[:1]
    left = len(ranked) - len(named)
    head_text, head_share = named[0]
    if head_share >= 0.995 and len(named) == 1:
        sentence = f"All attention on {head_text}"
    else:
        sentence = f"{_pct(head_share)} on {head_text}"
    if len(named) > 1:
        sentence += "; otherwise " + ", ".join(f"{text} ({_pct(share)})" for text, share in named[1:])
    if left:
        sentence += f"; {left} smaller part{'s' if left > 1 else ''} not named"
    from attndsl.explanations.categories import COPY_FLOOR

    for category, (on_copies, _, fires) in sorted(getattr(shares, "active", {}).items()):
        if on_copies >= COPY_FLOOR:
            what = "the token after an earlier copy" if category == "induction" else "earlier copies"
            sentence += (f"; where the token occurred before ({_pct(fires)} of tokens), "
                         f"{_pct(on_copies)} on {what}")
    return sentence + "."
