"""Machine translation with a local CTranslate2 model folder (user-supplied weights).

Accepted folders:
- a ctranslate2 converter output: `model.bin`, `config.json`, the vocabulary JSON/TXT files and SentencePiece
  models beside them (`source.spm` + `target.spm` for OPUS-MT/Marian; `sentencepiece.bpe.model` or any single
  `*.spm`/`*.model` for NLLB, M2M-100 and shared-vocabulary models);
- an installed argos-translate package: `model/` (a ctranslate2 folder), `sentencepiece.model`, `metadata.json`.

Language tokens are detected from the vocabulary: NLLB (`spa_Latn`), M2M-100 (`__es__`) and multilingual
OPUS-MT (`>>spa<<`) models get the tokens they were trained with; argos packages use their `target_prefix`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import langcodes

from dubforge.core.errors import StageError
from dubforge.core.files import fingerprint
from dubforge.models.base import Translator

BEAM_SIZE = 4
MAX_DECODING_LENGTH = 256

# ISO 639 macrolanguages whose NLLB/OPUS code is the individual language most text is written in.
_INDIVIDUAL = {
    "ara": "arb", "fas": "pes", "msa": "zsm", "swa": "swh", "lav": "lvs", "uzb": "uzn", "nep": "npi",
    "ori": "ory", "orm": "gaz", "pus": "pbt", "mon": "khk", "nor": "nob", "que": "quy", "aze": "azj",
    "yid": "ydd", "kur": "kmr", "sqi": "als",
}

_CACHE: dict[Path, tuple[Any, Any, Any]] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelFolder:
    model_dir: Path
    source_spm: Path
    target_spm: Path
    target_prefix: str = ""  # argos metadata
    languages: tuple[str, str] | None = None  # argos (from_code, to_code)


@dataclass(frozen=True)
class Framing:
    """Tokens a model needs around the sentence pieces."""

    source_prefix: tuple[str, ...] = ()
    source_suffix: tuple[str, ...] = ()
    target_prefix: tuple[str, ...] = ()


def locate(folder: Path) -> ModelFolder:
    """Find the ctranslate2 model and SentencePiece files in `folder`, or raise StageError saying what is missing."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise StageError(f"ctranslate2 model folder {folder} does not exist")
    if (folder / "model" / "model.bin").is_file():  # argos package
        spm = folder / "sentencepiece.model"
        if not spm.is_file():
            raise StageError(f"{folder}: an argos package needs sentencepiece.model (BPE packages are not supported)")
        meta = _read_json(folder / "metadata.json") if (folder / "metadata.json").is_file() else {}
        langs = (meta["from_code"], meta["to_code"]) if "from_code" in meta and "to_code" in meta else None
        return ModelFolder(folder / "model", spm, spm, str(meta.get("target_prefix") or ""), langs)
    if not (folder / "model.bin").is_file():
        raise StageError(
            f"{folder} is not a CTranslate2 model folder: expected model.bin (from ct2-transformers-converter or "
            "ct2-opus-mt-converter) or an argos package (model/model.bin + sentencepiece.model)"
        )
    if (folder / "source.spm").is_file() and (folder / "target.spm").is_file():
        return ModelFolder(folder, folder / "source.spm", folder / "target.spm")
    shared = [folder / n for n in ("sentencepiece.bpe.model", "sentencepiece.model", "spm.model")]
    shared = [p for p in shared if p.is_file()] or sorted([*folder.glob("*.spm"), *folder.glob("*.model")])
    if len(shared) != 1:
        found = ", ".join(p.name for p in shared) or "none"
        raise StageError(
            f"{folder}: expected SentencePiece models source.spm + target.spm, or one shared "
            f"sentencepiece.bpe.model (found: {found}); copy them in with the converter's --copy_files"
        )
    return ModelFolder(folder, shared[0], shared[0])


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageError(f"cannot read {path}: {exc}") from exc


def read_vocabulary(model_dir: Path) -> list[str]:
    """All tokens of a ctranslate2 model folder's vocabulary files (JSON lists or one token per line).

    Very old formats keep the vocabulary inside model.bin; then no language tokens are detected.
    """
    tokens: list[str] = []
    for stem in ("shared_vocabulary", "source_vocabulary", "target_vocabulary", "vocabulary"):
        if (model_dir / f"{stem}.json").is_file():
            tokens += json.loads((model_dir / f"{stem}.json").read_text(encoding="utf-8"))
        elif (model_dir / f"{stem}.txt").is_file():
            tokens += (model_dir / f"{stem}.txt").read_text(encoding="utf-8").splitlines()
    return tokens


def _codes(language: str) -> dict[str, str]:
    tag = langcodes.Language.get(language)
    alpha3 = tag.to_alpha3()
    script = tag.maximize().script or "Latn"
    return {
        "alpha2": tag.language or "",
        "alpha3": alpha3,
        "individual": _INDIVIDUAL.get(alpha3, alpha3),
        "region": f"{tag.language}_{tag.territory}" if tag.territory else "",
        "script": script,
    }


def _nllb_token(vocab: Collection[str], language: str) -> str:
    c = _codes(language)
    for code in (c["alpha3"], c["individual"]):
        if f"{code}_{c['script']}" in vocab:
            return f"{code}_{c['script']}"
    raise StageError(f"this NLLB model has no language token for {language!r} (tried {c['individual']}_{c['script']})")


def framing(vocab: Collection[str], source: str, target: str, config: dict[str, Any], target_prefix: str = "") -> Framing:
    """The language/end tokens to add for this model family, detected from its vocabulary and config."""
    vocab = set(vocab)
    eos = config.get("eos_token") or "</s>"
    # Models converted from Transformers start decoding from </s> and expect </s> at the end of the source
    # (unless the config adds it); OpenNMT models (argos) start from <s> and take the bare pieces.
    suffix = (eos,) if config.get("decoder_start_token") == eos and not config.get("add_source_eos") else ()
    if target_prefix:
        return Framing(target_prefix=(target_prefix,))
    if "eng_Latn" in vocab:  # NLLB-200
        return Framing((_nllb_token(vocab, source),), suffix, (_nllb_token(vocab, target),))
    if "__en__" in vocab:  # M2M-100
        src, tgt = f"__{_codes(source)['alpha2']}__", f"__{_codes(target)['alpha2']}__"
        for lang, tok in ((source, src), (target, tgt)):
            if tok not in vocab:
                raise StageError(f"this M2M-100 model has no language token for {lang!r} ({tok})")
        return Framing((src,), suffix, (tgt,))
    marks = sorted(t for t in vocab if t.startswith(">>") and t.endswith("<<"))
    if marks:  # multilingual-target OPUS-MT
        c = _codes(target)
        for code in (c["region"].lower(), c["region"], c["individual"], c["alpha3"], c["alpha2"]):
            if code and f">>{code}<<" in vocab:
                return Framing((f">>{code}<<",), suffix)
        shown = ", ".join(marks[:12]) + (" ..." if len(marks) > 12 else "")
        raise StageError(f"this multilingual OPUS-MT model has no target token for {target!r} (it has {shown})")
    return Framing(source_suffix=suffix)


def _load(folder: ModelFolder) -> tuple[Any, Any, Any]:
    """ctranslate2.Translator and SentencePiece processors, once per model folder and process."""
    key = folder.model_dir.resolve()
    with _CACHE_LOCK:
        if key not in _CACHE:
            try:
                import ctranslate2
                import sentencepiece as spm
            except ImportError as exc:
                raise StageError(f"the ctranslate2 backend needs the ctranslate2 and sentencepiece packages: {exc}") from exc
            try:
                translator = ctranslate2.Translator(str(folder.model_dir), device="auto", compute_type="default")
                src = spm.SentencePieceProcessor(model_file=str(folder.source_spm))
                tgt = src if folder.target_spm == folder.source_spm else spm.SentencePieceProcessor(model_file=str(folder.target_spm))
            except (RuntimeError, OSError, ValueError) as exc:
                raise StageError(f"cannot load the CTranslate2 model in {folder.model_dir}: {exc}") from exc
            _CACHE[key] = (translator, src, tgt)
        return _CACHE[key]


class CTranslate2Translator(Translator):
    name = "ctranslate2"
    needs_weights = True

    def __init__(self, model: str | None = None, endpoint: str | None = None, api_key_env: str | None = None):
        if not model:
            raise StageError("the ctranslate2 backend needs 'model': the path of a CTranslate2 model folder")
        self.folder = locate(Path(model))
        self.config = _read_json(self.folder.model_dir / "config.json") if (self.folder.model_dir / "config.json").is_file() else {}
        self.vocabulary = read_vocabulary(self.folder.model_dir)

    def _check_pair(self, source: str, target: str) -> None:
        if self.folder.languages is None:
            return
        have = tuple(langcodes.Language.get(c).language for c in self.folder.languages)
        want = (langcodes.Language.get(source).language, langcodes.Language.get(target).language)
        if have != want:
            raise StageError(
                f"the argos package {self.folder.model_dir.parent} translates {have[0]} -> {have[1]}, not {source} -> {target}"
            )

    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        self._check_pair(source, target)
        frame = framing(self.vocabulary, source, target, self.config, self.folder.target_prefix)
        translator, src_sp, tgt_sp = _load(self.folder)
        pieces = {
            i: [*frame.source_prefix, *src_sp.encode(" ".join(str(t).split()), out_type=str), *frame.source_suffix]
            for i, t in enumerate(texts) if str(t).strip()
        }
        # Lines are batched by decoding budget (3x their length, capped): a looping model stops early, and a line's
        # budget does not depend on the other lines in the call.
        groups: dict[int, list[int]] = {}
        for i, tokens in pieces.items():
            groups.setdefault(min(MAX_DECODING_LENGTH, 16 * ((3 * len(tokens) + 31) // 16)), []).append(i)
        special = {*frame.source_prefix, *frame.source_suffix, *frame.target_prefix, self.config.get("unk_token", "<unk>")}
        out = [""] * len(texts)
        for budget, members in sorted(groups.items()):
            try:
                results = translator.translate_batch(
                    [pieces[i] for i in members],
                    target_prefix=[list(frame.target_prefix)] * len(members) if frame.target_prefix else None,
                    beam_size=BEAM_SIZE, max_batch_size=32, max_decoding_length=budget,
                    length_penalty=0.2, replace_unknowns=True,
                )
            except (RuntimeError, ValueError) as exc:
                raise StageError(f"CTranslate2 translation with {self.folder.model_dir} failed: {exc}") from exc
            for i, result in zip(members, results):
                # replace_unknowns copies the most-attended source token, which may be a language/end token
                tokens = [t for t in result.hypotheses[0][len(frame.target_prefix):] if t not in special]
                out[i] = tgt_sp.decode(tokens).strip()
        return out

    def fingerprint(self) -> str:
        files = [self.folder.model_dir / "model.bin", self.folder.source_spm, self.folder.target_spm]
        return fingerprint(self.name, version("ctranslate2"), files, self.config, self.folder.target_prefix, BEAM_SIZE,
                           MAX_DECODING_LENGTH)
