"""Word and character error rates between a reference text and what an ASR heard, after normalisation.

The normaliser is language-aware where it matters for scoring speech: Unicode NFKC, case folded, numbers
spelled out in the text's own language (num2words: "42" and "cuarenta y dos" score equal), punctuation
and symbols removed (apostrophes inside words kept), whitespace collapsed. CER is counted on the normalised
words joined by single spaces. Both rates are edits / reference length and may exceed 1.
"""

from __future__ import annotations

import re
import unicodedata

import jiwer
from num2words import num2words

from dubforge.core.languages import base_language

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# num2words language names where they differ from the BCP-47 base language
_NUM2WORDS = {"pt-BR": "pt_BR", "zh": "zh", "nb": "no"}


def _spell(match: re.Match[str], language: str) -> str:
    raw = match[0]
    try:
        value: float | int = int(raw) if raw.isdigit() else float(raw.replace(",", "."))
        return f" {num2words(value, lang=language)} "
    except (NotImplementedError, ValueError, OverflowError, KeyError):  # a language num2words lacks, or no number
        return f" {raw} "


def num2words_language(language: str) -> str:
    return _NUM2WORDS.get(language) or _NUM2WORDS.get(base_language(language)) or base_language(language)


def normalise(text: str, language: str) -> str:
    """Text as it is scored: 'Olá, 2 amigos!' -> 'olá dois amigos' (pt)."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("’", "'")
    lang = num2words_language(language)
    text = _NUMBER.sub(lambda m: _spell(m, lang), text)
    text = text.replace("-", " ")
    kept = []
    for i, char in enumerate(text):
        category = unicodedata.category(char)
        inner_apostrophe = char == "'" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
        kept.append(" " if category[0] in "PSZC" and not inner_apostrophe else char)
    return " ".join("".join(kept).split())


def error_rates(reference: str, heard: str, language: str) -> tuple[float, float]:
    """(WER, CER) of `heard` against `reference`, both normalised. An empty reference scores 0 if nothing was
    heard, else 1 (something spoken where nothing should be)."""
    ref, hyp = normalise(reference, language), normalise(heard, language)
    if not ref:
        return (0.0, 0.0) if not hyp else (1.0, 1.0)
    if not hyp:
        return 1.0, 1.0
    return float(jiwer.wer(ref, hyp)), float(jiwer.cer(ref, hyp))
