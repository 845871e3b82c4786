"""Language codes: BCP-47 in manifests, ISO 639-2 in containers."""

from __future__ import annotations

import langcodes


class LanguageError(ValueError):
    pass


def normalise_language(code: str) -> str:
    """Return the standard form of a BCP-47 tag ('pt-br' -> 'pt-BR'), or raise LanguageError."""
    try:
        tag = langcodes.Language.get(str(code))
        if not tag.is_valid() or not tag.language:
            raise LanguageError
        tag.to_alpha3()
    except (LanguageError, LookupError, ValueError):
        raise LanguageError(f"unknown language code {code!r} (expected a BCP-47 tag such as 'es', 'de' or 'pt-BR')") from None
    return tag.to_tag()


def base_language(code: str) -> str:
    """'pt-BR' -> 'pt'."""
    return langcodes.Language.get(code).language or code


def iso639_2(code: str, bibliographic: bool = False) -> str:
    """Three-letter code for container tags: 'de' -> 'deu' (MP4) or 'ger' (Matroska, bibliographic)."""
    return langcodes.Language.get(code).to_alpha3(variant="B" if bibliographic else "T")


def display_name(code: str) -> str:
    try:
        return langcodes.Language.get(code).display_name()
    except Exception:  # language_data (names) is an optional extra of langcodes
        return code
