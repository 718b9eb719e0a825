"""Syntax tree → typed IR, reporting every problem at once.

`check` walks each program once, resolving names against the vocabulary in
`attndsl.language.ir` and inferring types; each problem becomes a `Diagnostic` with
the line and column of the offending node, and checking goes on so that one
run reports them all.  Programs with problems produce no IR.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from attndsl.language import ast, ir
from attndsl.errors import AttnError, Diagnostic, source_line

NUM, BOOL, STR = "number", "condition", "text"


class _Bad(Exception):
    """Internal: the sub-expression already produced a diagnostic."""


@dataclass
class _Checker:
    path: str
    source: str
    uses_syntax: bool = False
    diagnostics: list[Diagnostic] = field(default_factory=list)
    lexicons: dict[str, ir.Lexicon] = field(default_factory=dict)

    # -- reporting
    def error(self, span: ast.Span, message: str, expected: str = "") -> None:
        line = span.line or 1
        self.diagnostics.append(
            Diagnostic(self.path, line, span.column or 1, message, expected, source_line(self.source, line))
        )

    def fail(self, span: ast.Span, message: str, expected: str = ""):
        self.error(span, message, expected)
        raise _Bad

    # -- programs
    def program(self, program: ast.Program) -> ir.Program | None:
        before = len(self.diagnostics)
        self.uses_syntax = program.uses_syntax
        if program.fallback not in ir.FALLBACKS:
            self.error(
                program.fallback_span if program.fallback_span.line else program.span,
                f"unknown fallback '{program.fallback}'",
                "one of " + ", ".join(ir.FALLBACKS),
            )
        if program.form not in ir.FORMS:
            self.error(
                program.form_span if program.form_span.line else program.span,
                f"unknown combination '{program.form}'",
                "combine linear or combine softmax",
            )
        self.lexicons = self.declare_lexicons(program.lexicons)
        if not program.terms:
            self.error(program.span, f"program '{program.name}' has no terms", "at least one term, e.g. 1 * [k == q - 1]")
        masks = []
        for mask in program.masks:
            try:
                masks.append(self.mask(mask))
            except _Bad:
                pass
        terms = []
        for term in program.terms:
            terms.append(self.term(term))
        if len(self.diagnostics) > before:
            return None
        return ir.Program(program.name, tuple(terms), program.fallback, program.uses_syntax,
                          program.form, tuple(masks))

    def mask(self, node: ast.Expr) -> ir.Factor:
        """``mask [c]`` → an indicator; ``mask nearest(c)`` (any selection) → the selection."""
        if isinstance(node, ast.Indicator):
            return ir.Indicator(self.expect(node.condition, BOOL))
        if isinstance(node, ast.Call) and node.name in ir.SELECTIONS:
            return self.factor(node)
        self.fail(_span_of(node), "a mask must be a [condition] or a selection",
                  "mask [punct(k)] or mask nearest(tok(k) == tok(q))")

    def declare_lexicons(self, lexicons) -> dict[str, ir.Lexicon]:
        """Check every lexicon declaration; the valid ones become readable names."""
        found: dict[str, ir.Lexicon] = {}
        if len(lexicons) > ir.MAX_LEXICONS:
            self.error(lexicons[ir.MAX_LEXICONS].span, f"a program may declare at most {ir.MAX_LEXICONS} lexicons",
                       "fewer lexicons, or one lexicon holding more words")
        reserved = set(ir.ALL_FEATURES) | set(ir.FUNCTIONS) | set(ir.SELECTIONS) | {"q", "k", "d", "true", "false"}
        for lexicon in lexicons:
            ok = True
            if lexicon.name in reserved:
                self.error(lexicon.span, f"lexicon name '{lexicon.name}' is already a name of the language",
                           "another name, e.g. key_words")
                ok = False
            elif lexicon.name in found:
                self.error(lexicon.span, f"duplicate lexicon name '{lexicon.name}'", "a unique name per lexicon")
                ok = False
            if len(lexicon.entries) > ir.MAX_LEXICON_ENTRIES:
                self.error(lexicon.span,
                           f"lexicon '{lexicon.name}' has {len(lexicon.entries)} entries; at most "
                           f"{ir.MAX_LEXICON_ENTRIES} are allowed", "keep the words with the largest weights")
            seen: set[str] = set()
            for entry in lexicon.entries:
                key = entry.key
                if not key:
                    self.error(entry.span, "a lexicon key cannot be empty", 'a word such as "the"')
                elif len(key) > ir.MAX_LEXICON_KEY:
                    self.error(entry.span, f"lexicon key is {len(key)} characters long; at most {ir.MAX_LEXICON_KEY}",
                               "a shorter word")
                elif key != key.lower():
                    self.error(entry.span, f"lexicon key {json.dumps(key, ensure_ascii=False)} is not lower-case "
                               "(lexicons are read on lower-cased text)",
                               json.dumps(key.lower(), ensure_ascii=False))
                elif key in seen:
                    self.error(entry.span, f"duplicate key {json.dumps(key, ensure_ascii=False)} in lexicon "
                               f"'{lexicon.name}'", "each word once")
                seen.add(key)
                if not math.isfinite(entry.weight):
                    self.error(entry.span, f"lexicon weight {entry.weight} is not a finite number",
                               "a finite number such as 0.5")
            if ok:  # a bad entry is reported above; the name still resolves, so reads raise no second error
                found[lexicon.name] = ir.Lexicon(lexicon.name, tuple((e.key, float(e.weight)) for e in lexicon.entries))
        return found

    def term(self, term: ast.Term) -> ir.Term | None:
        if not math.isfinite(term.weight):
            self.error(term.span, f"weight {term.weight} is not a finite number", "a finite number such as 0.5")
        factors = []
        for factor in term.factors:
            try:
                factors.append(self.factor(factor))
            except _Bad:
                pass
        return ir.Term(term.weight, tuple(factors))

    def factor(self, node: ast.Expr) -> ir.Factor:
        if isinstance(node, ast.Call) and node.name in ir.SELECTIONS:
            if len(node.args) != 1:
                self.fail(node.span, f"{node.name}() takes one condition, got {len(node.args)} arguments", f"{node.name}(condition)")
            return ir.Select(node.name, self.expect(node.args[0], BOOL))
        return self.expect(node, NUM, as_factor=True)

    # -- expressions
    def expect(self, node: ast.Expr, want: str, as_factor: bool = False):
        kind, value = self.expr(node)
        if kind != want:
            hint = ""
            if want == NUM and kind == BOOL:
                hint = "wrap a condition in [ ] to use it as 0/1, e.g. [punct(k)]"
            elif want == BOOL and kind == NUM:
                hint = "a condition, e.g. k == q - 1 or punct(k)"
            elif kind == STR:
                hint = f"a {want}; compare text with == or in {{...}}"
            where = "as a factor" if as_factor else "here"
            self.fail(_span_of(node), f"expected a {want} {where}, got {_article(kind)}", hint)
        return value

    def expr(self, node: ast.Expr):
        match node:
            case ast.Number(value=value, span=span):
                if not math.isfinite(value):
                    self.fail(span, f"number {value} is not finite", "a finite number")
                return NUM, ir.Const(value)
            case ast.String(value=value):
                return STR, ir.StrLit(value)
            case ast.Name(id=name, span=span):
                return self.name(name, span)
            case ast.Call():
                return self.call(node)
            case ast.Indicator(condition=condition):
                return NUM, ir.Indicator(self.expect(condition, BOOL))
            case ast.Neg(operand=operand):
                return NUM, ir.Negate(self.expect(operand, NUM))
            case ast.Binary(op=op, left=left, right=right):
                lhs, rhs = self.both(lambda: self.expect(left, NUM), lambda: self.expect(right, NUM))
                return NUM, ir.Arith(op, lhs, rhs)
            case ast.Compare():
                return BOOL, self.compare(node)
            case ast.InSet():
                return BOOL, self.in_set(node)
            case ast.And(left=left, right=right):
                lhs, rhs = self.both(lambda: self.expect(left, BOOL), lambda: self.expect(right, BOOL))
                return BOOL, ir.AndB(lhs, rhs)
            case ast.Or(left=left, right=right):
                lhs, rhs = self.both(lambda: self.expect(left, BOOL), lambda: self.expect(right, BOOL))
                return BOOL, ir.OrB(lhs, rhs)
            case ast.Not(operand=operand):
                return BOOL, ir.NotB(self.expect(operand, BOOL))
        raise AssertionError(f"unhandled syntax node {type(node).__name__}")  # pragma: no cover

    def both(self, first, second):
        """Check two operands, reporting problems in both before giving up."""
        results, failed = [], False
        for check in (first, second):
            try:
                results.append(check())
            except _Bad:
                failed = True
        if failed:
            raise _Bad
        return results

    def name(self, name: str, span: ast.Span):
        match name:
            case "q" | "k":
                return NUM, ir.Position(name)
            case "d":
                return NUM, ir.Dist()
            case "true" | "false":
                return BOOL, ir.BoolConst(name == "true")
        if name in ir.ALL_FEATURES or name in self.lexicons:
            kind = "lexicon" if name in self.lexicons else "feature"
            self.fail(span, f"{kind} '{name}' needs a position", f"{name}(k) or {name}(q)")
        if name in ir.FUNCTIONS or name in ir.SELECTIONS:
            self.fail(span, f"'{name}' is a function and needs arguments", f"{name}(...)")
        self.fail(span, f"unknown name '{name}'", "q, k, d, true, false, or a feature call such as tok(k)")

    def position(self, node: ast.Expr, feature: str) -> ir.At:
        match node:
            case ast.Name(id="q" | "k" as var):
                return ir.At(var, 0)
            case ast.Binary(op="+" | "-" as op, left=ast.Name(id="q" | "k" as var), right=ast.Number(value=value)):
                if float(value).is_integer() and abs(value) < 1e6:
                    offset = int(value)
                    return ir.At(var, offset if op == "+" else -offset)
        self.fail(
            _span_of(node),
            f"the position given to {feature}() must be q or k plus or minus a whole number",
            "q, k, k-1, q+1, ...",
        )

    def call(self, node: ast.Call):
        name, args, span = node.name, node.args, node.span
        if name in ir.SELECTIONS:
            self.fail(span, f"{name}() can only be a factor of a term, not part of an expression", f"w * {name}(condition)")
        if name in ir.FUNCTIONS:
            arity = ir.FUNCTIONS[name]
            if len(args) != arity:
                self.fail(span, f"{name}() takes {arity} argument{'s' if arity > 1 else ''}, got {len(args)}")
            values = []
            failed = False
            for arg in args:
                try:
                    values.append(self.expect(arg, NUM))
                except _Bad:
                    failed = True
            if failed:
                raise _Bad
            return NUM, ir.Func(name, tuple(values))
        if name in self.lexicons:
            if len(args) != 1:
                self.fail(span, f"lexicon {name}() takes 1 position, got {len(args)}", f"{name}(k)")
            return NUM, ir.LexiconRead(self.lexicons[name], self.position(args[0], name))
        if name in ir.SYNTAX_FEATURES and not self.uses_syntax:
            self.error(span, f"feature '{name}' needs syntax; add 'uses syntax' to the program", "uses syntax")
        cross = name in ir.CROSS_BOOL_FEATURES or name in ir.CROSS_NUMBER_FEATURES
        if name in ir.ALL_FEATURES:
            want = 2 if cross else 1
            if len(args) != want:
                self.fail(span, f"feature {name}() takes {want} position{'s' if want > 1 else ''}, got {len(args)}",
                          f"{name}(q, k)" if cross else f"{name}(k)")
            positions = [self.position(arg, name) for arg in args]
            if name in ir.STRING_FEATURES or name in ir.SYNTAX_STRING_FEATURES:
                return STR, ir.StrFeature(name, positions[0])
            if name in ir.NUMBER_FEATURES or name in ir.SYNTAX_NUMBER_FEATURES:
                return NUM, ir.NumFeature(name, positions[0])
            if name in ir.BOOL_FEATURES:
                return BOOL, ir.BoolFeature(name, positions[0])
            if name in ir.CROSS_BOOL_FEATURES:
                return BOOL, ir.Same(name, positions[0], positions[1])
            return NUM, ir.Similarity(positions[0], positions[1])
        self.fail(span, f"unknown feature or function '{name}'", _suggest(name, self.lexicons))

    def compare(self, node: ast.Compare):
        (lkind, lhs), (rkind, rhs) = self.both(lambda: self.expr(node.left), lambda: self.expr(node.right))
        op = node.op
        if lkind != rkind:
            self.fail(node.span, f"cannot compare {_article(lkind)} with {_article(rkind)}",
                      "both sides of the same type, e.g. tok(k) == \".\" or k == q - 1")
        if lkind == NUM:
            return ir.NumCompare(op, lhs, rhs)
        if op not in ("==", "!="):
            self.fail(node.span, f"'{op}' needs numbers; {lkind}s can only be compared with == and !=", "== or !=")
        if lkind == STR:
            return ir.StrEquals(lhs, rhs, op == "!=")
        return ir.BoolEquals(lhs, rhs, op == "!=")

    def in_set(self, node: ast.InSet):
        kind, operand = self.expr(node.operand)
        if kind == BOOL:
            self.fail(_span_of(node.operand), "'in' needs a number or text on the left, got a condition")
        item_kinds = {NUM if isinstance(i, ast.Number) else STR for i in node.items}
        for item in node.items:
            if isinstance(item, ast.Number) and not math.isfinite(item.value):
                self.error(item.span, f"number {item.value} is not finite", "a finite number")
        if item_kinds - {kind}:
            self.fail(_span_of(node.operand), f"a set compared with {_article(kind)} must hold only {kind}s",
                      f"a set of {kind}s")
        if kind == NUM:
            return ir.NumIn(operand, tuple(i.value for i in node.items), node.negated)
        return ir.StrIn(operand, tuple(i.value for i in node.items), node.negated)


def _article(kind: str) -> str:
    return {NUM: "a number", BOOL: "a condition", STR: "text"}[kind]


def _span_of(node) -> ast.Span:
    span = getattr(node, "span", ast.Span())
    if span.line:
        return span
    for child in ("left", "operand", "condition"):
        if hasattr(node, child):
            return _span_of(getattr(node, child))
    return span


def _suggest(name: str, lexicons=()) -> str:
    import difflib

    known = list(ir.ALL_FEATURES) + list(ir.FUNCTIONS) + list(ir.SELECTIONS) + list(lexicons)
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    return "a feature (tok, lower, punct, ...), a function (exp, pow, ...) or nearest/first/spread"


def check(module: ast.Module, source: str = "") -> tuple[list[ir.Program], list[Diagnostic]]:
    """Validate every program; return the IR of the valid ones and all problems."""
    checker = _Checker(module.path, source)
    seen: dict[str, ast.Program] = {}
    programs = []
    for program in module.programs:
        if program.name in seen:
            checker.error(program.span, f"duplicate program name '{program.name}' (first defined on line {seen[program.name].span.line})",
                          "a unique name per program")
        else:
            seen[program.name] = program
        lowered = checker.program(program)
        if lowered is not None:
            programs.append(lowered)
    checker.diagnostics.sort(key=lambda d: (d.line, d.column))
    return programs, checker.diagnostics


def compile_source(source: str, path: str = "<string>") -> list[ir.Program]:
    """Parse and validate; raise `AttnError` with every problem, else the IR."""
    from attndsl.language.parser import parse

    module = parse(source, path)
    programs, problems = check(module, source)
    if problems:
        raise AttnError(problems)
    return programs


def compile_file(path: str) -> list[ir.Program]:
    from attndsl.language.parser import parse, read_source

    source = read_source(path)
    module = parse(source, str(path))
    programs, problems = check(module, source)
    if problems:
        raise AttnError(problems)
    return programs


def compile_program(source: str, path: str = "<string>") -> ir.Program:
    programs = compile_source(source, path)
    if len(programs) != 1:
        raise AttnError([Diagnostic(path, 1, 1, f"expected exactly one program, found {len(programs)}")])
    return programs[0]
