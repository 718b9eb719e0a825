"""Golden error messages: malformed programs and exactly what attndsl says.

Regenerate only on purpose: every change here is a change users (and the
LLM repair loop) see.
"""

GOLDEN = {
    'missing_brace': (
        'program p {\n    1 * [k == 0]\n',
        "missing_brace.attn:2:17: unexpected end of file\n        1 * [k == 0]\n                    ^\n  expected: '*', '+' or '-', '}'",
    ),
    'missing_name': (
        'program {\n    1 * [k == 0]\n}\n',
        "missing_name.attn:1:9: unexpected token '{'\n    program {\n            ^\n  expected: a name",
    ),
    'number_after_factor': (
        'program p {\n    1 * d * 0.5\n}\n',
        "number_after_factor.attn:2:13: unexpected number '0.5' (a number can only come first in a term, as its weight: write 0.5 * d, not d * 0.5)\n        1 * d * 0.5\n                ^\n  expected: '(', '[', a name",
    ),
    'dangling_star': (
        'program p {\n    1 * [k == 0] *\n}\n',
        "dangling_star.attn:3:1: unexpected token '}'\n    }\n    ^\n  expected: '(', '[', a name",
    ),
    'empty_condition': (
        'program p {\n    1 * [k == ]\n}\n',
        "empty_condition.attn:2:15: unexpected token ']'\n        1 * [k == ]\n                  ^\n  expected: '(', '-', '[', a name, a number, a string",
    ),
    'bad_character': (
        'program p {\n    1 * [k == 0] @ 2\n}\n',
        "bad_character.attn:2:18: unexpected character '@'\n        1 * [k == 0] @ 2\n                     ^\n  expected: '*', '+' or '-', '}'",
    ),
    'bad_string_escape': (
        'program p {\n    1 * [tok(k) == "\\q"]\n}\n',
        'bad_string_escape.attn:2:20: invalid string literal "\\q"\n        1 * [tok(k) == "\\q"]\n                       ^\n  expected: a JSON-style string such as "." or "\\n"',
    ),
    'unclosed_string': (
        'program p {\n    1 * [tok(k) == ".]\n}\n',
        'unclosed_string.attn:2:20: unexpected character \'"\'\n        1 * [tok(k) == ".]\n                       ^\n  expected: \'(\', \'-\', \'[\', a name, a number, a string',
    ),
    'chained_comparison': (
        'program p {\n    1 * [0 < k < q]\n}\n',
        "chained_comparison.attn:2:16: unexpected token '<'\n        1 * [0 < k < q]\n                   ^\n  expected: '+' or '-', ']', 'and', 'or'",
    ),
    'unknown_keyword_decl': (
        'program p {\n    fallback\n    1 * [k == 0]\n}\n',
        "unknown_keyword_decl.attn:3:5: unexpected number '1'\n        1 * [k == 0]\n        ^\n  expected: a name",
    ),
    'set_with_expression': (
        'program p {\n    1 * [k in {1, q}]\n}\n',
        "set_with_expression.attn:2:19: unexpected name 'q'\n        1 * [k in {1, q}]\n                      ^\n  expected: '-', a number, a string",
    ),
    'top_level_junk': (
        'prog p { 1 }\n',
        "top_level_junk.attn:1:1: unexpected name 'prog'\n    prog p { 1 }\n    ^\n  expected: 'program', end of file",
    ),
    'unknown_feature': (
        'program p {\n    1 * [toke(k) == "."]\n}\n',
        'unknown_feature.attn:2:10: unknown feature or function \'toke\'\n        1 * [toke(k) == "."]\n             ^\n  expected: did you mean tok?',
    ),
    'unknown_name': (
        'program p {\n    1 * [k == z]\n}\n',
        "unknown_name.attn:2:15: unknown name 'z'\n        1 * [k == z]\n                  ^\n  expected: q, k, d, true, false, or a feature call such as tok(k)",
    ),
    'unknown_function': (
        'program p {\n    1 * expo(-d)\n}\n',
        "unknown_function.attn:2:9: unknown feature or function 'expo'\n        1 * expo(-d)\n            ^\n  expected: did you mean exp?",
    ),
    'string_vs_number': (
        'program p {\n    1 * [tok(k) == 3]\n}\n',
        'string_vs_number.attn:2:17: cannot compare text with a number\n        1 * [tok(k) == 3]\n                    ^\n  expected: both sides of the same type, e.g. tok(k) == "." or k == q - 1',
    ),
    'ordering_text': (
        'program p {\n    1 * [tok(k) < "b"]\n}\n',
        'ordering_text.attn:2:17: \'<\' needs numbers; texts can only be compared with == and !=\n        1 * [tok(k) < "b"]\n                    ^\n  expected: == or !=',
    ),
    'condition_as_factor': (
        'program p {\n    1 * punct(k)\n}\n',
        'condition_as_factor.attn:2:9: expected a number as a factor, got a condition\n        1 * punct(k)\n            ^\n  expected: wrap a condition in [ ] to use it as 0/1, e.g. [punct(k)]',
    ),
    'number_as_condition': (
        'program p {\n    1 * [len(k)]\n}\n',
        'number_as_condition.attn:2:10: expected a condition here, got a number\n        1 * [len(k)]\n             ^\n  expected: a condition, e.g. k == q - 1 or punct(k)',
    ),
    'syntax_without_declaration': (
        'program p {\n    1 * [upos(k) == "NOUN"]\n}\n',
        'syntax_without_declaration.attn:2:10: feature \'upos\' needs syntax; add \'uses syntax\' to the program\n        1 * [upos(k) == "NOUN"]\n             ^\n  expected: uses syntax',
    ),
    'non_finite_weight': (
        'program p {\n    1e999 * [k == 0]\n}\n',
        'non_finite_weight.attn:2:5: weight inf is not a finite number\n        1e999 * [k == 0]\n        ^\n  expected: a finite number such as 0.5',
    ),
    'non_finite_literal': (
        'program p {\n    1 * exp(1e999 * d)\n}\n',
        'non_finite_literal.attn:2:13: number inf is not finite\n        1 * exp(1e999 * d)\n                ^\n  expected: a finite number',
    ),
    'empty_program': (
        'program p {\n    fallback self\n}\n',
        "empty_program.attn:1:9: program 'p' has no terms\n    program p {\n            ^\n  expected: at least one term, e.g. 1 * [k == q - 1]",
    ),
    'duplicate_names': (
        'program p {\n    1 * [k == 0]\n}\nprogram p {\n    1 * [k == q]\n}\n',
        "duplicate_names.attn:4:9: duplicate program name 'p' (first defined on line 1)\n    program p {\n            ^\n  expected: a unique name per program",
    ),
    'unknown_fallback': (
        'program p {\n    fallback last\n    1 * [k == 0]\n}\n',
        "unknown_fallback.attn:2:14: unknown fallback 'last'\n        fallback last\n                 ^\n  expected: one of first, self, previous, uniform",
    ),
    'selection_inside_expression': (
        'program p {\n    1 * exp(nearest(punct(k)))\n}\n',
        'selection_inside_expression.attn:2:13: nearest() can only be a factor of a term, not part of an expression\n        1 * exp(nearest(punct(k)))\n                ^\n  expected: w * nearest(condition)',
    ),
    'selection_arity': (
        'program p {\n    1 * nearest(punct(k), k < q)\n}\n',
        'selection_arity.attn:2:9: nearest() takes one condition, got 2 arguments\n        1 * nearest(punct(k), k < q)\n            ^\n  expected: nearest(condition)',
    ),
    'feature_bad_position': (
        'program p {\n    1 * [tok(k * 2) == "."]\n}\n',
        'feature_bad_position.attn:2:14: the position given to tok() must be q or k plus or minus a whole number\n        1 * [tok(k * 2) == "."]\n                 ^\n  expected: q, k, k-1, q+1, ...',
    ),
    'feature_fractional_offset': (
        'program p {\n    1 * [punct(k - 0.5)]\n}\n',
        'feature_fractional_offset.attn:2:18: the position given to punct() must be q or k plus or minus a whole number\n        1 * [punct(k - 0.5)]\n                     ^\n  expected: q, k, k-1, q+1, ...',
    ),
    'feature_missing_position': (
        'program p {\n    1 * [tok == "."]\n}\n',
        'feature_missing_position.attn:2:10: feature \'tok\' needs a position\n        1 * [tok == "."]\n             ^\n  expected: tok(k) or tok(q)',
    ),
    'cross_feature_arity': (
        'program p {\n    1 * [same_word(k)]\n}\n',
        'cross_feature_arity.attn:2:10: feature same_word() takes 2 positions, got 1\n        1 * [same_word(k)]\n             ^\n  expected: same_word(q, k)',
    ),
    'function_arity': (
        'program p {\n    1 * pow(d)\n}\n',
        'function_arity.attn:2:9: pow() takes 2 arguments, got 1\n        1 * pow(d)\n            ^',
    ),
    'mixed_set': (
        'program p {\n    1 * [tok(k) in {".", 1}]\n}\n',
        'mixed_set.attn:2:10: a set compared with text must hold only texts\n        1 * [tok(k) in {".", 1}]\n             ^\n  expected: a set of texts',
    ),
    'condition_in_set': (
        'program p {\n    1 * [punct(k) in {1}]\n}\n',
        "condition_in_set.attn:2:10: 'in' needs a number or text on the left, got a condition\n        1 * [punct(k) in {1}]\n             ^",
    ),
    'several_problems': (
        'program p {\n    1 * [tok(k) == 1] + 2 * foo(k)\n    + 1e999 * [upos(k) == "DET"]\n}\n',
        'several_problems.attn:2:17: cannot compare text with a number\n        1 * [tok(k) == 1] + 2 * foo(k)\n                    ^\n  expected: both sides of the same type, e.g. tok(k) == "." or k == q - 1\nseveral_problems.attn:2:29: unknown feature or function \'foo\'\n        1 * [tok(k) == 1] + 2 * foo(k)\n                                ^\n  expected: a feature (tok, lower, punct, ...), a function (exp, pow, ...) or nearest/first/spread\nseveral_problems.attn:3:7: weight inf is not a finite number\n        + 1e999 * [upos(k) == "DET"]\n          ^\n  expected: a finite number such as 0.5\nseveral_problems.attn:3:16: feature \'upos\' needs syntax; add \'uses syntax\' to the program\n        + 1e999 * [upos(k) == "DET"]\n                   ^\n  expected: uses syntax',
    ),
    'lone_surrogate': (
        'program p {\n    1 * [tok(k) == "\\ud800"]\n}\n',
        'lone_surrogate.attn:2:20: string literal "\\ud800" holds U+D800, a lone surrogate, which is not a Unicode character\n        1 * [tok(k) == "\\ud800"]\n                       ^\n  expected: Unicode characters only; write a character outside the BMP as a pair such as "\\ud83d\\ude00"',
    ),
    'cr_line_endings': (
        'program p { # a comment\r    1 * [k == 0]\r}\rprogram r {\r    1 * [tok(k) = "."]\r}\r',
        'cr_line_endings.attn:5:17: unexpected character \'=\'\n        1 * [tok(k) = "."]\n                    ^\n  expected: \'(\', \')\', \'*\', \'+\' or \'-\', \',\', \'/\', \'[\', \']\', \'}\', a comparison (== != < <= > >=), a name, a number',
    ),
    'too_many_factors': (
        'program p {\n    1 * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d\n}\n',
        'too_many_factors.attn:2:265: more than 64 factors in one term\n        1 * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d * d\n                                                                                                                                                                                                                                                                            ^\n  expected: at most 64 factors; split the term, or combine conditions in one [ ]',
    ),
    # softmax form, masks and lexicons
    'unknown_combination': (
        'program p {\n    combine soft\n    1 * [k == 0]\n}\n',
        "unknown_combination.attn:2:13: unknown combination 'soft'\n        combine soft\n                ^\n  expected: combine linear or combine softmax",
    ),
    'mask_not_condition': (
        'program p {\n    combine softmax\n    mask exp(d)\n    1 * [k == 0]\n}\n',
        'mask_not_condition.attn:3:10: a mask must be a [condition] or a selection\n        mask exp(d)\n             ^\n  expected: mask [punct(k)] or mask nearest(tok(k) == tok(q))',
    ),
    'mask_number': (
        'program p {\n    combine softmax\n    mask [len(k)]\n    1 * [k == 0]\n}\n',
        'mask_number.attn:3:11: expected a condition here, got a number\n        mask [len(k)]\n              ^\n  expected: a condition, e.g. k == q - 1 or punct(k)',
    ),
    'mask_after_terms': (
        'program p {\n    combine softmax\n    1 * [k == 0]\n    mask [punct(k)]\n}\n',
        "mask_after_terms.attn:4:5: unexpected token 'mask'\n        mask [punct(k)]\n        ^\n  expected: '*', '+' or '-', '}'",
    ),
    'lexicon_upper_key': (
        'program p {\n    lexicon w { "The": 1 }\n    1 * w(k)\n}\n',
        'lexicon_upper_key.attn:2:17: lexicon key "The" is not lower-case (lexicons are read on lower-cased text)\n        lexicon w { "The": 1 }\n                    ^\n  expected: "the"',
    ),
    'lexicon_duplicate_key': (
        'program p {\n    lexicon w { "the": 1, "a": 2, "the": 3 }\n    1 * w(k)\n}\n',
        'lexicon_duplicate_key.attn:2:35: duplicate key "the" in lexicon \'w\'\n        lexicon w { "the": 1, "a": 2, "the": 3 }\n                                      ^\n  expected: each word once',
    ),
    'lexicon_empty_key': (
        'program p {\n    lexicon w { "": 1 }\n    1 * w(k)\n}\n',
        'lexicon_empty_key.attn:2:17: a lexicon key cannot be empty\n        lexicon w { "": 1 }\n                    ^\n  expected: a word such as "the"',
    ),
    'lexicon_reserved_name': (
        'program p {\n    lexicon tok { "the": 1 }\n    1 * [k == 0]\n}\n',
        'lexicon_reserved_name.attn:2:13: lexicon name \'tok\' is already a name of the language\n        lexicon tok { "the": 1 }\n                ^\n  expected: another name, e.g. key_words',
    ),
    'lexicon_duplicate_name': (
        'program p {\n    lexicon w { "the": 1 }\n    lexicon w { "a": 1 }\n    1 * w(k)\n}\n',
        'lexicon_duplicate_name.attn:3:13: duplicate lexicon name \'w\'\n        lexicon w { "a": 1 }\n                ^\n  expected: a unique name per lexicon',
    ),
    'lexicon_non_finite_weight': (
        'program p {\n    lexicon w { "the": 1e999 }\n    1 * w(k)\n}\n',
        'lexicon_non_finite_weight.attn:2:17: lexicon weight inf is not a finite number\n        lexicon w { "the": 1e999 }\n                    ^\n  expected: a finite number such as 0.5',
    ),
    'lexicon_missing_colon': (
        'program p {\n    lexicon w { "the" 1 }\n    1 * w(k)\n}\n',
        'lexicon_missing_colon.attn:2:23: unexpected number \'1\'\n        lexicon w { "the" 1 }\n                          ^\n  expected: \':\'',
    ),
    'lexicon_word_key': (
        'program p {\n    lexicon w { the: 1 }\n    1 * w(k)\n}\n',
        "lexicon_word_key.attn:2:17: unexpected name 'the'\n        lexicon w { the: 1 }\n                    ^\n  expected: '}', a string",
    ),
    'lexicon_too_large': (
        'program p {\n    lexicon w {\n' + ',\n'.join(f'        "w{i}": 1' for i in range(257)) + '\n    }\n    1 * w(k)\n}\n',
        "lexicon_too_large.attn:2:13: lexicon 'w' has 257 entries; at most 256 are allowed\n        lexicon w {\n                ^\n  expected: keep the words with the largest weights",
    ),
    'lexicon_without_position': (
        'program p {\n    lexicon w { "the": 1 }\n    1 * w\n}\n',
        "lexicon_without_position.attn:3:9: lexicon 'w' needs a position\n        1 * w\n            ^\n  expected: w(k) or w(q)",
    ),
    'lexicon_arity': (
        'program p {\n    lexicon w { "the": 1 }\n    1 * w(q, k)\n}\n',
        'lexicon_arity.attn:3:9: lexicon w() takes 1 position, got 2\n        1 * w(q, k)\n            ^\n  expected: w(k)',
    ),
    'lexicon_unknown': (
        'program p {\n    lexicon words { "the": 1 }\n    1 * wrds(k)\n}\n',
        "lexicon_unknown.attn:3:9: unknown feature or function 'wrds'\n        1 * wrds(k)\n            ^\n  expected: did you mean words or word or word_pos?",
    ),
}
