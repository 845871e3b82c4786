"""Glossary checks: which project terms a source line uses, and whether its translation honours them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from dubforge.core.languages import base_language


@dataclass(frozen=True)
class TermHit:
    term: str  # as written in the source
    expected: str  # what the translation must contain (the term itself for do-not-translate terms)
    found: bool

    def describe(self) -> str:
        rule = f"keep '{self.term}'" if self.expected == self.term else f"'{self.term}' -> '{self.expected}'"
        return f"{rule}: {'ok' if self.found else 'MISSING'}"


@cache
def _pattern(term: str) -> re.Pattern[str]:
    return re.compile(rf"(?<!\w){re.escape(term)}(?!\w)", re.IGNORECASE)


def contains(text: str, term: str) -> bool:
    return bool(term.strip()) and _pattern(term.strip()).search(text) is not None


def required_terms(keep: list[str], fixed: dict[str, dict[str, str]], language: str) -> dict[str, str]:
    """source term -> what a `language` translation must contain (fixed translations by exact or base language)."""
    terms = {term: term for term in keep}
    for term, translations in fixed.items():
        wanted = translations.get(language) or translations.get(base_language(language))
        if wanted:
            terms[term] = wanted
    return terms


def check_line(source_text: str, translation: str, terms: dict[str, str]) -> list[TermHit]:
    """The glossary terms in `source_text`, each with whether the translation contains its required form."""
    return [TermHit(term, expected, contains(translation, expected))
            for term, expected in terms.items() if contains(source_text, term)]
