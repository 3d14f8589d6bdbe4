"""The chat's own texts: every one in Arabic and English, placeholders alike."""

from __future__ import annotations

import string

import pytest

from rag import ui_text


@pytest.mark.parametrize("key", sorted(ui_text.TEXTS))
def test_every_text_has_arabic_and_english_with_the_same_placeholders(key):
    entry = ui_text.TEXTS[key]
    assert set(entry) == set(ui_text.LANGUAGES), key
    assert all(entry[lang].strip() for lang in ui_text.LANGUAGES), key
    placeholders = {lang: {f for _, f, _, _ in string.Formatter().parse(entry[lang]) if f}
                    for lang in ui_text.LANGUAGES}
    assert placeholders["ar"] == placeholders["en"], key


@pytest.mark.parametrize(("locale", "language"), [
    ("ar-SA", "ar"), ("ar", "ar"), ("AR-eg", "ar"), ("en-US", "en"), ("fr-FR", "en"), ("", "en"), (None, "en"),
    ("arn-CL", "en")])
def test_language_follows_the_browser_locale(locale, language):
    assert ui_text.language(locale) == language


def test_text_fills_its_placeholders_in_the_chosen_language():
    assert ui_text.text("index.ready", "en", count=5) == "5 articles ready"
    assert ui_text.text("index.ready", "ar", count=5) == "المقالات الجاهزة: 5"


def test_an_unknown_key_or_language_says_how_to_fix_it():
    with pytest.raises(KeyError, match="rag.ui_text.TEXTS"):
        ui_text.text("no.such.text", "en")
    with pytest.raises(ValueError, match="'fr' is not one of ar, en"):
        ui_text.text("index.ready", "fr", count=1)
