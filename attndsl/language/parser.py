"""Source text → syntax tree (`attndsl.language.ast`), with errors as `AttnError`.

The grammar is `attndsl/grammar/attn.lark` (package data of
``attndsl.grammar``).  LALR with Lark's contextual lexer: fast, deterministic,
and its error states name the tokens that were expected, which become the
``expected:`` line of each diagnostic.

The parser is also where the front end is made *total*: every later stage
(validator, printer, emitter, interpreter, kernel encoder) walks expressions
recursively, so `parse` rejects, before the tree is transformed, programs
whose expressions nest deeper than `MAX_DEPTH` levels or whose terms have more
than `MAX_FACTORS` factors (see "Limits" in the DSL reference).  With these
limits every accepted program validates, prints, re-parses and emits Python
that CPython compiles (its parser refuses 200 nested parentheses) without
`RecursionError`.  Line endings (LF, CRLF, CR alone) are read alike, and text
must consist of Unicode scalar values (no lone surrogates).

Why this module is over 400 lines: the grammar's transformer, the iterative
limits walk and the translation of each Lark error kind into one diagnostic
must agree on the same rules, so they stay beside each other.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from attndsl.language import ast
from attndsl.errors import AttnError, Diagnostic, source_line

#: deepest expression accepted: each call, bracket, operator, negation and
#: chained ``and`` / ``or`` operand is one level (``exp(exp(d))`` is 3 deep,
#: ``a and b and c`` is 3).  Emitted Python nests about one parenthesis per
#: level plus one per factor, and CPython refuses 200.
MAX_DEPTH = 100
#: most factors in one term (``w * f1 * ... * fn``)
MAX_FACTORS = 64

GRAMMAR_PACKAGE = "attndsl.grammar"
GRAMMAR_FILE = "attn.lark"

# Friendly names for the grammar's terminals in "expected:" lines.
_TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "SIGN": "'+' or '-'",
    "_STAR": "'*'",
    "_SLASH": "'/'",
    "COMPARE": "a comparison (== != < <= > >=)",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "STAR": "'*'",
    "MINUS": "'-'",
    "PROGRAM": "'program'",
    "USES": "'uses'",
    "SYNTAX": "'syntax'",
    "FALLBACK": "'fallback'",
    "OR": "'or'",
    "AND": "'and'",
    "NOT": "'not'",
    "IN": "'in'",
    "COLON": "':'",
    "$END": "end of file",
}


def grammar_text() -> str:
    """The grammar, as shipped; also quoted whole in LLM prompts."""
    return resources.files(GRAMMAR_PACKAGE).joinpath(GRAMMAR_FILE).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=True)


def _span(meta_or_token) -> ast.Span:
    line = getattr(meta_or_token, "line", None)
    column = getattr(meta_or_token, "column", None)
    if line is None:
        return ast.Span()
    return ast.Span(line, column)


class _Invalid(Exception):
    """A token the grammar accepts but whose text cannot be decoded (bad escape)."""

    def __init__(self, token: Token, message: str, expected: str):
        self.token, self.message, self.expected = token, message, expected


_SURROGATE = re.compile("[\ud800-\udfff]")


def _decode_string(token: Token) -> str:
    try:
        value = json.loads(str(token))
    except ValueError:
        raise _Invalid(token, f"invalid string literal {token}", 'a JSON-style string such as "." or "\\n"') from None
    bad = _SURROGATE.search(value)
    if bad:
        raise _Invalid(
            token,
            f"string literal {token} holds U+{ord(bad.group()):04X}, a lone surrogate, which is not a Unicode character",
            'Unicode characters only; write a character outside the BMP as a pair such as "\\ud83d\\ude00"',
        )
    return value


@v_args(meta=True)
class _Build(Transformer):
    def start(self, meta, programs):
        return tuple(programs)

    def program(self, meta, children):
        name_token, *rest = children
        uses_syntax = False
        fallback, fallback_span = "first", ast.Span()
        terms: tuple = ()
        extra = _Declarations()
        for child in rest:
            if child == "uses_syntax":
                uses_syntax = True
            elif isinstance(child, tuple) and child and child[0] == "fallback":
                fallback, fallback_span = child[1], child[2]
            elif isinstance(child, list):
                terms = tuple(child)
            else:
                extra.add(child)
        return ast.Program(str(name_token), terms, fallback, uses_syntax, _span(name_token), fallback_span,
                           **extra.fields())

    def uses_syntax(self, meta, children):
        return "uses_syntax"

    def fallback(self, meta, children):
        (token,) = children
        return ("fallback", str(token), _span(token))

    def body(self, meta, children):
        terms = [children[0]]
        for sign, term in zip(children[1::2], children[2::2]):
            terms.append(_signed(term, str(sign)))
        return terms

    def first_term(self, meta, children):
        if len(children) == 2:
            sign, term = children
            return _signed(term, str(sign) if sign is not None else "+")
        return children[0]

    def weighted_term(self, meta, children):
        number, *factors = children
        return ast.Term(float(number), tuple(factors), _span(meta))

    def unit_term(self, meta, children):
        return ast.Term(1.0, tuple(children), _span(meta))

    def name(self, meta, children):
        (token,) = children
        return ast.Name(str(token), _span(token))

    def call(self, meta, children):
        name_token, *args = children
        args = tuple(a for a in args if a is not None)
        return ast.Call(str(name_token), args, _span(name_token))

    def indicator(self, meta, children):
        return ast.Indicator(children[0], _span(meta))

    def number(self, meta, children):
        return ast.Number(float(children[0]), _span(children[0]))

    def negative_number(self, meta, children):
        return ast.Number(-float(children[0]), _span(meta))

    def string(self, meta, children):
        return ast.String(_decode_string(children[0]), _span(children[0]))

    def neg(self, meta, children):
        (operand,) = children
        if isinstance(operand, ast.Number):  # "-0.5" is one literal
            return ast.Number(-operand.value, _span(meta))
        return ast.Neg(operand, _span(meta))

    def binary(self, meta, children):
        left, op, right = children
        return ast.Binary(str(op), left, right, _span(op))

    def multiply(self, meta, children):
        left, right = children
        return ast.Binary("*", left, right, _span(meta))

    def divide(self, meta, children):
        left, right = children
        return ast.Binary("/", left, right, _span(meta))

    def compare(self, meta, children):
        left, op, right = children
        return ast.Compare(str(op), left, right, _span(op))

    def in_set(self, meta, children):
        operand, items = children
        return ast.InSet(operand, items, False, _span(meta))

    def not_in_set(self, meta, children):
        operand, items = children
        return ast.InSet(operand, items, True, _span(meta))

    def set(self, meta, children):
        return tuple(c for c in children if c is not None)

    def or_expr(self, meta, children):
        return _fold(ast.Or, children)

    def and_expr(self, meta, children):
        return _fold(ast.And, children)

    def not_(self, meta, children):
        return ast.Not(children[0], _span(meta))

    # -- softmax form, masks and lexicons (declarations before the terms)
    def combine(self, meta, children):
        (token,) = children
        return ("combine", str(token), _span(token))

    def mask_condition(self, meta, children):
        return ("mask", ast.Indicator(children[0], _span(meta)))

    def mask_call(self, meta, children):
        return ("mask", children[0])

    def lexicon(self, meta, children):
        name_token, *entries = children
        if len(entries) == 1 and isinstance(entries[0], Token) and entries[0].type == "LEXICON_BODY":
            entries = _lexicon_entries(entries[0])
        else:
            entries = tuple(e for e in entries if isinstance(e, ast.LexiconEntry))
        return ("lexicon", ast.Lexicon(str(name_token), entries, _span(name_token)))

    def lex_entry(self, meta, children):
        key, weight = children
        return ast.LexiconEntry(_decode_string(key), weight.value, _span(key))


@lru_cache(maxsize=1)
def _entry_scanner() -> "re.Pattern":
    """Finds a `LEXICON_BODY`'s entries and comments, left to right: a comment, or an entry's
    STRING, optional minus and NUMBER (built from the grammar's own terminals)."""
    lark = _lark()
    string, number, comment = (lark.get_terminal(name).pattern.to_regexp() for name in ("STRING", "NUMBER", "COMMENT"))
    gap = f"(?:[ \\t\\f\\r\\n]|{comment}\\n)*"
    return re.compile(f"{comment}|(?P<key>{string}){gap}:{gap}(?P<minus>-)?{gap}(?P<number>{number})")


#: what makes a string need JSON's decoder (an escape to decode, or a control character it refuses)
_NEEDS_JSON = re.compile('[\\\\\x00-\x1f]')


def _lexicon_entries(body: Token) -> tuple:
    """The entries of a lexicon read as one `LEXICON_BODY` token: what the ``lex_entry`` rule
    builds from the same text, spans included."""
    text = str(body)
    entries = []
    for match in _entry_scanner().finditer(text):
        key = match.group("key")
        if key is None:  # a comment
            continue
        at = match.start()
        newlines = text.count("\n", 0, at)
        line = body.line + newlines
        column = at - text.rfind("\n", 0, at) if newlines else body.column + at
        if _NEEDS_JSON.search(key) is None:
            word = key[1:-1]
        else:
            word = _decode_string(Token("STRING", key, start_pos=body.start_pos + at, line=line, column=column))
        value = float(match.group("number"))
        entries.append(ast.LexiconEntry(word, -value if match.group("minus") else value, ast.Span(line, column)))
    return tuple(entries)


class _Declarations:
    """Collects a program's ``combine``, ``mask`` and ``lexicon`` declarations
    (a later ``combine`` overrides an earlier one, as ``fallback`` does)."""

    def __init__(self) -> None:
        self.form, self.form_span = "linear", ast.Span()
        self.masks: list = []
        self.lexicons: list = []

    def add(self, child) -> None:
        kind = child[0] if isinstance(child, tuple) and child else None
        if kind == "combine":
            self.form, self.form_span = child[1], child[2]
        elif kind == "mask":
            self.masks.append(child[1])
        elif kind == "lexicon":
            self.lexicons.append(child[1])

    def fields(self) -> dict:
        return dict(form=self.form, masks=tuple(self.masks), lexicons=tuple(self.lexicons), form_span=self.form_span)


def _fold(node, children):
    result = children[0]
    for right in children[1:]:
        result = node(result, right, getattr(result, "span", ast.Span()))
    return result


def _signed(term: ast.Term, sign: str) -> ast.Term:
    return ast.Term(-term.weight if sign == "-" else term.weight, term.factors, term.span)


def _expected(names) -> str:
    pretty = sorted({_TERMINAL_NAMES.get(n, f"'{n.lower()}'" if n.isupper() else n) for n in names})
    return ", ".join(pretty)


def _describe(token: Token) -> str:
    if token.type == "$END":
        return "end of file"
    return f"{token.type.lower() if token.type in ('NAME', 'NUMBER', 'STRING') else 'token'} {str(token)!r}"


def _end_position(text: str) -> tuple[int, int]:
    """Line and column just after the last character (a final newline ends the last line)."""
    lines = text.split("\n")
    if len(lines) > 1 and lines[-1] == "":
        lines.pop()
    return len(lines), len(lines[-1]) + 1


def _syntax_diagnostic(error: UnexpectedInput, source: str, path: str) -> Diagnostic:
    line = getattr(error, "line", None) or 1
    column = getattr(error, "column", None) or 1
    if isinstance(error, UnexpectedCharacters):
        char = source[error.pos_in_stream] if error.pos_in_stream < len(source) else ""
        message = f"unexpected character {char!r}"
        expected = _expected(error.allowed or ())
    elif isinstance(error, UnexpectedEOF):
        line, column = _end_position(source)
        message = "unexpected end of file"
        expected = _expected(error.expected)
    elif isinstance(error, UnexpectedToken):
        if error.token.type == "$END":
            line, column = _end_position(source)
        message = f"unexpected {_describe(error.token)}"
        expected = _expected(error.accepts or error.expected)
        if error.token.type == "NUMBER" and "LSQB" in (error.accepts or error.expected):
            message += " (a number can only come first in a term, as its weight: write 0.5 * d, not d * 0.5)"
    else:  # pragma: no cover - Lark's other UnexpectedInput subclasses
        message, expected = "syntax error", ""
    if line < 1:
        line = 1
    return Diagnostic(path, line, column, message, expected, source_line(source, line))


# ------------------------------------------------------------------ limits

#: rules whose operands the transformer folds into a left-nested chain
_FOLDS = ("or_expr", "and_expr")
#: rules that are not expressions (their depth is not counted)
_STRUCTURE = ("start", "program", "body", "first_term", "uses_syntax", "fallback")
_TERMS = ("weighted_term", "unit_term")

_DEPTH_HINT = "a shallower expression: split it into terms, or test many values with one set, e.g. tok(k) in {\".\", \"!\"}"


def _where_iter(node) -> tuple[int, int]:
    """First position in ``node`` without recursion (trees may be deep)."""
    while isinstance(node, Tree):
        if not getattr(node.meta, "empty", True):
            return node.meta.line, node.meta.column
        kids = [c for c in node.children if isinstance(c, (Tree, Token))]
        if not kids:
            return 1, 1
        node = kids[0]
    return (node.line or 1, node.column or 1) if isinstance(node, Token) else (1, 1)


def limit_problems(tree: Tree, source: str, path: str) -> list[Diagnostic]:
    """Where a parse tree exceeds `MAX_DEPTH` or `MAX_FACTORS` (iterative: any depth).

    Depth is that of the syntax tree `_Build` would make (a folded chain of n
    ``and`` operands is n deep); each place where an expression first goes
    past the limit is reported once, at the node or operand that crosses it.
    """
    problems: list[tuple[int, int, str, str]] = []
    depth: dict[int, int] = {}  # id(tree) -> depth of the expression it builds
    over = MAX_DEPTH + 1  # depth recorded for a subtree already reported
    stack: list[tuple[Tree, bool]] = [(tree, False)]
    while stack:
        node, ready = stack.pop()
        kids = [c for c in node.children if isinstance(c, Tree)]
        if not ready:
            stack.append((node, True))
            stack.extend((c, False) for c in reversed(kids))
            continue
        child_depths = [depth.pop(id(c), 0) for c in kids]
        rule = node.data
        if rule in _STRUCTURE:
            continue
        if rule in _TERMS:
            depth[id(node)] = 0
            if len(kids) > MAX_FACTORS:
                line, column = _where_iter(kids[MAX_FACTORS])
                problems.append((line, column, f"more than {MAX_FACTORS} factors in one term",
                                 f"at most {MAX_FACTORS} factors; split the term, or combine conditions in one [ ]"))
            continue
        if any(d >= over for d in child_depths):
            depth[id(node)] = over  # already reported below
            continue
        if rule in _FOLDS:
            d, crossing = child_depths[0], None
            for i, cd in enumerate(child_depths[1:], start=1):
                d = 1 + max(d, cd)
                if d > MAX_DEPTH:
                    crossing = kids[i]
                    break
            if crossing is not None:
                word = "or" if rule == "or_expr" else "and"
                line, column = _where_iter(crossing)
                problems.append((line, column, f"nesting deeper than {MAX_DEPTH} levels (a chain of '{word}' counts one level per operand)", _DEPTH_HINT))
                d = over
        else:
            d = 1 + max(child_depths, default=0)
            if d > MAX_DEPTH:
                # a left-nested chain (a + b + c ...) crosses at its last operand
                chain = len(kids) > 1 and child_depths[0] == max(child_depths)
                line, column = _where_iter(kids[-1] if chain else node)
                problems.append((line, column, f"nesting deeper than {MAX_DEPTH} levels", _DEPTH_HINT))
                d = over
        depth[id(node)] = d
    return [Diagnostic(path, line, column, message, expected, source_line(source, line))
            for line, column, message, expected in sorted(problems)]


# ------------------------------------------------------------------ text


def normalise_newlines(source: str) -> str:
    """CRLF and a lone CR become LF, so every line ending reads alike
    (positions then count lines the way the diagnostics show them)."""
    return source.replace("\r\n", "\n").replace("\r", "\n")


def _surrogate_problem(text: str, path: str) -> Diagnostic | None:
    bad = _SURROGATE.search(text)
    if not bad:
        return None
    index = bad.start()
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return Diagnostic(path, line, column, f"U+{ord(bad.group()):04X} (a lone surrogate) is not a Unicode character",
                      "text of Unicode characters", source_line(text, line))


def parse(source: str, path: str = "<string>") -> ast.Module:
    """Parse program source.  Raises `AttnError` (and nothing else) on bad input."""
    return parse_with(_lark(), source, path)


def parse_with(lark: Lark, source: str, path: str = "<string>") -> ast.Module:
    """`parse` with another Lark parser of the same grammar's rules (the tests read lexicons
    without the fast path with it)."""
    if not isinstance(source, str):
        raise AttnError([Diagnostic(path, 1, 1, "program source must be text")])
    text = normalise_newlines(source)
    problem = _surrogate_problem(text, path)
    if problem is not None:
        raise AttnError([problem])
    try:
        tree = lark.parse(text)
        problems = limit_problems(tree, text, path)
        if problems:
            raise AttnError(problems)
        programs = _Build().transform(tree)
    except UnexpectedInput as error:
        raise AttnError([_syntax_diagnostic(error, text, path)]) from None
    except VisitError as error:
        inner = error.orig_exc
        if isinstance(inner, _Invalid):
            tok = inner.token
            raise AttnError(
                [Diagnostic(path, tok.line, tok.column, inner.message, inner.expected, source_line(text, tok.line))]
            ) from None
        raise AttnError([Diagnostic(path, 1, 1, f"could not read program: {inner}")]) from None
    except (LarkError, RecursionError) as error:
        raise AttnError([Diagnostic(path, 1, 1, f"could not read program: {type(error).__name__}")]) from None
    return ast.Module(tuple(programs), path)


def decode_source(raw: bytes, path: str) -> str:
    """Bytes of a program file as text; bytes that are not UTF-8 are an `AttnError`."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        start = error.start
        line_start = raw.rfind(b"\n", 0, start) + 1
        line = raw.count(b"\n", 0, start) + 1
        column = len(raw[line_start:start].decode("utf-8", "replace")) + 1
        raise AttnError([Diagnostic(str(path), line, column, f"file is not UTF-8 text (byte {start})")]) from None


def read_source(path: str) -> str:
    """A program file's text; unreadable or non-UTF-8 files are `AttnError`s."""
    from pathlib import Path

    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise AttnError([Diagnostic(str(path), 1, 1, f"cannot read file: {error.strerror or error}")]) from None
    return decode_source(raw, str(path))


def parse_file(path: str) -> ast.Module:
    return parse(read_source(path), str(path))


def parse_program(source: str, path: str = "<string>") -> ast.Program:
    """Parse source holding exactly one program."""
    module = parse(source, path)
    if len(module.programs) != 1:
        raise AttnError([Diagnostic(path, 1, 1, f"expected exactly one program, found {len(module.programs)}")])
    return module.programs[0]
