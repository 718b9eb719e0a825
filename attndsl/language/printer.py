"""Canonical source form of programs: ``parse(format_module(m)) == m``.

One program per block, one term per line, every weight written out, the
fewest parentheses that keep the tree, strings JSON-escaped, numbers in their
shortest exact form.  Declarations come first, in a fixed order: ``uses
syntax``, ``combine`` (only when not linear), ``fallback`` (only when not
first), lexicons (one entry per line), masks.
"""
from __future__ import annotations

import json
import math

from attndsl.language import ast

# Precedence levels (higher binds tighter); a child printed below the level
# its position requires gets parentheses.
_OR, _AND, _NOT, _CMP, _SUM, _PRODUCT, _UNARY, _ATOM = range(1, 9)


def format_number(value: float) -> str:
    if math.isnan(value):
        raise ValueError("NaN has no source form")
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if value or math.copysign(1.0, value) > 0 else "0"
    return repr(value)


def format_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _level(node: ast.Expr) -> int:
    match node:
        case ast.Or():
            return _OR
        case ast.And():
            return _AND
        case ast.Not():
            return _NOT
        case ast.Compare() | ast.InSet():
            return _CMP
        case ast.Binary(op="+" | "-"):
            return _SUM
        case ast.Binary():
            return _PRODUCT
        case ast.Neg():
            return _UNARY
        case ast.Number(value=v) if v < 0 or math.copysign(1.0, v) < 0:
            return _UNARY
        case _:
            return _ATOM


def format_expr(node: ast.Expr, min_level: int = _OR) -> str:
    text = _expr(node)
    return f"({text})" if _level(node) < min_level else text


def _expr(node: ast.Expr) -> str:
    match node:
        case ast.Number(value=v):
            return format_number(v)
        case ast.String(value=v):
            return format_string(v)
        case ast.Name(id=name):
            return name
        case ast.Call(name=name, args=args):
            return f"{name}({', '.join(format_expr(a) for a in args)})"
        case ast.Indicator(condition=c):
            return f"[{format_expr(c)}]"
        case ast.Neg(operand=operand):
            return f"-{format_expr(operand, _UNARY)}"
        case ast.Binary(op=op, left=left, right=right):
            level = _SUM if op in "+-" else _PRODUCT
            return f"{format_expr(left, level)} {op} {format_expr(right, level + 1)}"
        case ast.Compare(op=op, left=left, right=right):
            return f"{format_expr(left, _SUM)} {op} {format_expr(right, _SUM)}"
        case ast.InSet(operand=operand, items=items, negated=negated):
            inside = ", ".join(_expr(i) for i in items)
            return f"{format_expr(operand, _SUM)} {'not in' if negated else 'in'} {{{inside}}}"
        case ast.And(left=left, right=right):
            return f"{format_expr(left, _AND)} and {format_expr(right, _NOT)}"
        case ast.Or(left=left, right=right):
            return f"{format_expr(left, _OR)} or {format_expr(right, _AND)}"
        case ast.Not(operand=operand):
            return f"not {format_expr(operand, _NOT)}"
    raise AssertionError(f"unhandled syntax node {type(node).__name__}")


def format_factor(node: ast.Expr) -> str:
    """Top-level factors must be names, calls, brackets or parenthesised."""
    if isinstance(node, (ast.Name, ast.Call, ast.Indicator)):
        return _expr(node)
    return f"({_expr(node)})"


def format_term(term: ast.Term, first: bool) -> str:
    negative = term.weight < 0 or math.copysign(1.0, term.weight) < 0
    body = " * ".join([format_number(abs(term.weight))] + [format_factor(f) for f in term.factors])
    if first:
        return f"-{body}" if negative else body
    return f"{'-' if negative else '+'} {body}"


def format_lexicon(lexicon: ast.Lexicon, indent: str = "    ") -> list[str]:
    """A lexicon as a readable table: one ``"word": weight`` per line, in source order."""
    if not lexicon.entries:
        return [f"{indent}lexicon {lexicon.name} {{}}"]
    rows = [f"{indent}{indent}{format_string(e.key)}: {format_number(e.weight)}" for e in lexicon.entries]
    rows = [row + "," for row in rows[:-1]] + rows[-1:]
    return [f"{indent}lexicon {lexicon.name} {{", *rows, f"{indent}}}"]


def format_mask(node: ast.Expr) -> str:
    """``[condition]`` or a selection call (the two forms the grammar accepts)."""
    if isinstance(node, ast.Indicator):
        return f"[{format_expr(node.condition)}]"
    return _expr(node)


def format_program(program: ast.Program, indent: str = "    ") -> str:
    lines = [f"program {program.name} {{"]
    if program.uses_syntax:
        lines.append(f"{indent}uses syntax")
    if program.form != "linear":
        lines.append(f"{indent}combine {program.form}")
    if program.fallback != "first":
        lines.append(f"{indent}fallback {program.fallback}")
    for lexicon in program.lexicons:
        lines.extend(format_lexicon(lexicon, indent))
    for mask in program.masks:
        lines.append(f"{indent}mask {format_mask(mask)}")
    for i, term in enumerate(program.terms):
        lines.append(indent + format_term(term, first=(i == 0)))
    lines.append("}")
    return "\n".join(lines)


def format_module(module: ast.Module) -> str:
    return "\n\n".join(format_program(p) for p in module.programs) + ("\n" if module.programs else "")
