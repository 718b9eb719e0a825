"""What one program term points at, read off its IR (the explanation stage's parser of meaning).

A term is ``weight × factor × factor …``.  `describe_term` splits its factors
into *conjuncts* (the parts of ``[a and b]`` / ``nearest(a and b)``), sorts
them into

- **key conditions**: they read the key k and decide where attention goes
  (``k == q - 1``, ``same_tok(q, k)``, ``punct(k)``, ``tok(k) in {…}``);
- **query conditions**: they read only the query q and decide *when* the term
  applies (``[punct(q)]``, ``[not cap(q)]``);
- **bookkeeping**: ``k < q``, ``k > 0`` and other conditions that only trim
  the causal range (``excludes_sink`` remembers ``k > 0``);
- **distance factors**: numbers that depend only on d = q − k
  (``exp(-0.7 * d)``, ``pow(d + 1, -1.5)``), i.e. a decay;

and tags the term with one *kind* (`KINDS`), plus the parameters the gloss
and the namer need (the offset, the window, the word list, the selection).
The categories (`attndsl.explanations.categories`), the glosses (`attndsl.explanations.gloss`) and the
names (`attndsl.explanations.naming`) all read this one analysis, so they cannot disagree.
The analysis never fails: a shape it does not recognise is kind ``"other"``.

Why this module is over 400 lines: every term kind is recognised in the same
single walk over a term's conjuncts, and the categories, glosses and names
must read one analysis, so the recognisers stay together.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from attndsl.language import ir

#: term kinds, most specific first (a term with several key tags takes the first)
KINDS = (
    "syntactic",
    "induction",
    "duplicate",
    "lexical",
    "punctuation",
    "sentence",
    "word",
    "sink",
    "self",
    "previous",
    "offset",
    "local",
    "uniform",
    "other",
)

_PUNCT_CHARS = set(".,!?;:'\"()[]{}-–—…/\\*&%$#@`~<>|=+_^")


@dataclass(frozen=True)
class TermKind:
    """The analysis of one term (see the module docstring)."""

    kind: str
    selection: str | None = None  # nearest | first | spread, when the term selects
    offset: int | None = None  # "offset": the fixed distance q − k
    window: int | None = None  # largest distance the term allows (None: unbounded)
    decays: bool = False  # a distance factor shrinks the weight with d
    words: tuple[str, ...] = ()  # "lexical" / "punctuation": the listed texts at k
    feature: str | None = None  # the feature that decided the kind (punct, same_sent …)
    negated: bool = False  # the key condition is negated (not punct(k), tok(k) not in …)
    query_conditions: tuple[str, ...] = ()  # plain-English "when …" qualifiers
    excludes_sink: bool = False
    tags: tuple[str, ...] = field(default=())  # every key tag found (for debugging and tests)


# ------------------------------------------------------------------ helpers


def _conjuncts(condition: ir.Bool) -> list[ir.Bool]:
    out, stack = [], [condition]
    while stack:
        node = stack.pop()
        if isinstance(node, ir.AndB):
            stack.append(node.right)
            stack.append(node.left)
        else:
            out.append(node)
    return out


def _reads(node) -> set[str]:
    """Which of 'q', 'k', 'd' a node reads (d = q − k reads both)."""
    found: set[str] = set()
    for sub in ir.walk(node):
        if isinstance(sub, ir.Dist):
            found |= {"q", "k", "d"}
        elif isinstance(sub, ir.Position):
            found.add(sub.var)
        for name in ("at", "a", "b"):
            at = getattr(sub, name, None)
            if isinstance(at, ir.At):
                found.add(at.var)
    return found


def _linear(num: ir.Num) -> tuple[float, float, float] | None:
    """``num`` as a·q + b·k + c when it is linear in the positions (d counts as q − k)."""
    match num:
        case ir.Const(value=v):
            return (0.0, 0.0, v)
        case ir.Dist():
            return (1.0, -1.0, 0.0)
        case ir.Position(var="q"):
            return (1.0, 0.0, 0.0)
        case ir.Position(var="k"):
            return (0.0, 1.0, 0.0)
        case ir.NumFeature(name="pos", at=at):
            return (1.0, 0.0, float(at.offset)) if at.var == "q" else (0.0, 1.0, float(at.offset))
        case ir.Negate(operand=x):
            inner = _linear(x)
            return None if inner is None else tuple(-v for v in inner)
        case ir.Arith(op="+" | "-", left=a, right=b):
            la, lb = _linear(a), _linear(b)
            if la is None or lb is None:
                return None
            sign = 1.0 if num.op == "+" else -1.0
            return tuple(x + sign * y for x, y in zip(la, lb))
        case ir.Arith(op="*", left=a, right=b):
            la, lb = _linear(a), _linear(b)
            if la is None or lb is None:
                return None
            if la[:2] == (0.0, 0.0):
                return tuple(la[2] * v for v in lb)
            if lb[:2] == (0.0, 0.0):
                return tuple(lb[2] * v for v in la)
    return None


def _position_compare(cond: ir.NumCompare) -> tuple[str, float] | None:
    """A comparison of positions as (tag, value): ('k==', 0), ('d==', 1), ('d<=', 4), ('d>=', 1) …"""
    left, right = _linear(cond.left), _linear(cond.right)
    if left is None or right is None:
        return None
    a, b, c = (x - y for x, y in zip(left, right))  # a·q + b·k + c  op  0
    op = cond.op
    if a == 0 and b != 0:  # b·k + c op 0 → k op −c/b
        value = -c / b
        if b < 0:
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        return ("k" + op, value)
    if a != 0 and b == -a:  # a·(q − k) + c op 0 → d op −c/a
        value = -c / a
        if a < 0:
            op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
        return ("d" + op, value)
    return None


def _is_punct_text(text: str) -> bool:
    stripped = text.strip()
    return stripped == "" or all(ch in _PUNCT_CHARS for ch in stripped) or text in ("\n", "\n\n")


def _at_name(at: ir.At) -> str:
    if at.offset == 0:
        return at.var
    return f"{at.var}{at.offset:+d}"


_QUERY_WORDS = {
    "punct": "punctuation",
    "alpha": "a word",
    "digit": "a number",
    "cap": "capitalised",
    "word_start": "the start of a word",
    "newline": "a line break",
    "space": "whitespace",
    "seq_start": "the first token",
}


def _query_phrase(cond: ir.Bool, negated: bool = False) -> str:
    """Plain English for a condition on the query alone ("the current token is punctuation")."""
    match cond:
        case ir.NotB(operand=inner):
            return _query_phrase(inner, not negated)
        case ir.BoolFeature(name=name, at=at) if name in _QUERY_WORDS:
            who = "the current token" if at.offset == 0 else ("the next token" if at.offset == 1 else
                                                              "the previous token" if at.offset == -1 else
                                                              f"the token at q{at.offset:+d}")
            return f"{who} is {'not ' if negated else ''}{_QUERY_WORDS[name]}"
        case ir.StrIn(operand=ir.StrFeature(at=at), values=values, negated=neg):
            listed = ", ".join(repr_text(v) for v in values[:4]) + (" …" if len(values) > 4 else "")
            neg = neg != negated
            return f"the current token is {'not ' if neg else ''}one of {listed}" if at.offset == 0 else \
                f"the token at {_at_name(at)} is {'not ' if neg else ''}one of {listed}"
        case ir.StrEquals(left=ir.StrFeature(), right=ir.StrLit(value=v), negated=neg):
            return f"the current token is {'not ' if neg != negated else ''}{repr_text(v)}"
        case ir.NumCompare(op=op, left=left, right=right):
            lin_l, lin_r = _linear(left), _linear(right)
            if lin_l is not None and lin_r is not None:
                a, _, c = (x - y for x, y in zip(lin_l, lin_r))
                if a != 0:
                    if a < 0:
                        op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op, op)
                    if negated:
                        op = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}[op]
                    words = {"==": "at position", "!=": "not at position", "<": "before position",
                             "<=": "at or before position", ">": "after position", ">=": "at or after position"}[op]
                    return f"the current token is {words} {-c / a:g}"
            feats = [n for n in ir.walk(cond) if isinstance(n, ir.NumFeature)]
            if len(feats) == 1 and feats[0].name == "len":
                return f"the current token's length is {'not ' if negated else ''}{op} {_const_text(cond)}"
    return ("not " if negated else "") + "a condition on the current token holds"


def _const_text(cond: ir.NumCompare) -> str:
    for side in (cond.right, cond.left):
        if isinstance(side, ir.Const):
            return f"{side.value:g}"
    return "a bound"


def repr_text(text: str) -> str:
    """A token text in quotes, with line breaks and spaces made visible."""
    shown = text.replace("\n", "\\n").replace("\t", "\\t")
    return f"“{shown}”"


# ------------------------------------------------------------------ analysis


class _Tags:
    def __init__(self):
        self.tags: list[str] = []
        self.offset: int | None = None
        self.window: int | None = None
        self.words: tuple[str, ...] = ()
        self.feature: str | None = None
        self.negated = False
        self.excludes_sink = False
        self.query: list[str] = []
        self.other = False
        self.before = False  # k < q seen: the term never points at the query itself

    def add(self, tag: str, feature: str | None = None) -> None:
        self.tags.append(tag)
        if feature and self.feature is None:
            self.feature = feature


def _key_condition(cond: ir.Bool, t: _Tags, negated: bool = False) -> None:
    """Tag one conjunct that reads k (see module docstring)."""
    match cond:
        case ir.BoolConst(value=v):
            if not v:
                t.other = True
            return
        case ir.NotB(operand=inner):
            _key_condition(inner, t, not negated)
            return
        case ir.OrB(left=a, right=b):
            for part in (a, b):
                if "k" in _reads(part):
                    _key_condition(part, t, negated)
            return
        case ir.NumCompare() as c:
            found = _position_compare(c)
            if found is not None:
                tag, value = found
                if negated:
                    tag = tag[0] + {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}[tag[1:]]
                _position_tag(tag, value, t)
                return
            feats = {getattr(n, "name", None) for n in ir.walk(c) if isinstance(n, ir.NumFeature)}
            if feats & set(ir.SYNTAX_FEATURES):
                t.add("syntactic", "head")
            elif feats & {"sent", "sent_pos"}:
                t.add("sentence", "sent")
            elif feats & {"word", "word_pos"}:
                t.add("word", "word")
            else:
                t.other = True
            return
        case ir.BoolFeature(name=name, at=at):
            if name == "seq_start" and at.offset == 0:
                t.add("sink" if not negated else "nosink")
                if negated:
                    t.excludes_sink = True
            elif name in ("punct", "newline"):
                t.add("punctuation", name)
                t.negated = t.negated or negated
            elif name == "word_start":
                t.add("wordstart", name)
                t.negated = t.negated or negated
            else:
                t.add("class", name)
                t.negated = t.negated or negated
            return
        case ir.Same(name=name, a=a, b=b):
            pair = {a, b}
            induction = any(x.var == "k" and x.offset == -1 for x in pair) and any(x.var == "q" and x.offset == 0 for x in pair)
            if name in ("same_tok", "same_lower"):
                t.add("induction" if induction else "duplicate", name)
            elif name == "same_sent":
                t.add("sentence", name)
            else:
                t.add("word", name)
            t.negated = t.negated or negated
            return
        case ir.StrEquals(left=left, right=right, negated=neg):
            neg = neg != negated
            if isinstance(left, ir.StrFeature) and isinstance(right, ir.StrFeature):
                pair = {left.at, right.at}
                induction = any(x.var == "k" and x.offset == -1 for x in pair) and any(
                    x.var == "q" and x.offset == 0 for x in pair)
                tag = "induction" if induction else "duplicate"
                if left.name in ir.SYNTAX_FEATURES:
                    tag = "syntactic"
                t.add(tag, left.name)
                t.negated = t.negated or neg
                return
            feature, literal = (left, right) if isinstance(right, ir.StrLit) else (right, left)
            if isinstance(feature, ir.StrFeature) and isinstance(literal, ir.StrLit):
                _word_list(feature.name, (literal.value,), neg, t)
                return
            t.other = True
            return
        case ir.StrIn(operand=operand, values=values, negated=neg):
            if isinstance(operand, ir.StrFeature):
                _word_list(operand.name, values, neg != negated, t)
            else:
                t.other = True
            return
        case ir.NumIn(operand=operand, values=values, negated=neg):
            lin = _linear(operand)
            if lin is not None and len(values) == 1:
                _key_condition(ir.NumCompare("!=" if neg else "==", operand, ir.Const(values[0])), t, negated)
                return
            feats = {getattr(n, "name", None) for n in ir.walk(operand) if isinstance(n, ir.NumFeature)}
            t.add("syntactic", "head") if feats & set(ir.SYNTAX_FEATURES) else setattr(t, "other", True)
            return
        case ir.BoolEquals():
            t.other = True
            return
    t.other = True


def _word_list(name: str, values: tuple[str, ...], negated: bool, t: _Tags) -> None:
    if name in ir.SYNTAX_FEATURES:
        t.add("syntactic", name)
    elif all(_is_punct_text(v) for v in values):
        t.add("punctuation", "list")
    else:
        t.add("lexical", "list")
    t.words = tuple(values)
    t.negated = t.negated or negated


def _position_tag(tag: str, value: float, t: _Tags) -> None:
    if tag == "k==" and value == 0:
        t.add("sink")
    elif tag in ("k>", "k!=") and value == 0 or tag == "k>=" and value == 1:
        t.excludes_sink = True
    elif tag == "d==" and value == 0:
        t.add("self")
    elif tag == "d==" and value == 1:
        t.add("previous")
    elif tag == "d==" and value > 1 and float(value).is_integer():
        t.add("offset")
        t.offset = int(value)
    elif tag in ("d<=", "d<"):
        limit = int(value) - (1 if tag == "d<" and float(value).is_integer() else 0)
        t.add("window")
        t.window = limit if t.window is None else min(t.window, limit)
    elif tag in ("d>", "d>=", "d!="):
        t.before = True  # k < q and friends: trims the causal range only
    elif tag.startswith("k"):
        t.other = True
    else:
        t.other = True


def _decay(num: ir.Num) -> bool | None:
    """True when a distance-only factor shrinks with d; None when it does not read d."""
    reads = _reads(num)
    if reads - {"d", "q", "k"} or not reads:
        return None
    if "d" not in reads:
        return None
    match num:
        case ir.Func(name="exp", args=(arg,)):
            lin = _linear(arg)
            return lin is not None and lin[0] < 0  # coefficient of d (as q) negative
        case ir.Func(name="pow", args=(base, exponent)):
            const = _linear(exponent)
            return const is not None and const[:2] == (0.0, 0.0) and const[2] < 0
        case ir.Arith(op="/", left=ir.Const(), right=_):
            return True
    return True


def describe_term(term: ir.Term) -> TermKind:
    """The kind and parameters of one term (never raises; unknown shapes are ``"other"``)."""
    t = _Tags()
    selection: str | None = None
    decays = False
    for factor in term.factors:
        if isinstance(factor, ir.Select):
            selection = factor.kind
            conds = _conjuncts(factor.condition)
        elif isinstance(factor, ir.Indicator):
            conds = _conjuncts(factor.condition)
        else:
            reads = _reads(factor)
            if not reads:
                continue  # a constant factor
            if reads <= {"q", "k", "d"} and "d" in reads:
                decays = decays or bool(_decay(factor))
                t.add("window" if not decays else "decay")
                continue
            lexicon = next((n for n in ir.walk(factor) if isinstance(n, ir.LexiconRead) and n.at.var == "k"), None)
            if lexicon is not None:  # a weighted word table read at the key: lexical, its best-liked words first
                ranked = sorted(lexicon.lexicon.entries, key=lambda kv: (-kv[1], kv[0]))
                t.add("lexical", "lexicon")
                t.words = tuple(word for word, weight in ranked if weight > 0) or tuple(w for w, _ in ranked)
                continue
            feats = {getattr(n, "name", None) for n in ir.walk(factor) if isinstance(n, (ir.NumFeature, ir.Similarity))}
            if any(isinstance(n, ir.Similarity) for n in ir.walk(factor)):
                t.add("duplicate", "sim")
            elif feats & set(ir.SYNTAX_FEATURES):
                t.add("syntactic", "head")
            elif "k" in reads:
                t.other = True
            continue
        for cond in conds:
            reads = _reads(cond)
            if "k" not in reads:
                if "q" in reads:
                    t.query.append(_query_phrase(cond))
                continue
            _key_condition(cond, t)
    kind = _kind(t.tags, selection, t.other, t.before)
    return TermKind(kind=kind, selection=selection, offset=t.offset, window=t.window, decays=decays,
                    words=t.words, feature=t.feature, negated=t.negated, query_conditions=tuple(t.query),
                    excludes_sink=t.excludes_sink, tags=tuple(t.tags))


def _kind(tags: list[str], selection: str | None, other: bool, before: bool) -> str:
    for kind in KINDS[:11]:  # syntactic … offset: explicit key tags
        if kind in tags:
            if kind in ("sink", "self", "previous", "offset") and len(set(tags) - {kind, "window", "decay"}) > 0:
                continue  # an exact position combined with a content test: the content decides
            return kind
    if {"window", "decay"} & set(tags):
        return "local"
    if "wordstart" in tags:
        return "word"
    if "class" in tags or other:
        return "other"
    # no key tags: a constant, or a selection over every key
    if selection == "first":
        return "sink"
    if selection == "nearest":
        return "previous" if before else "self"
    return "uniform"
