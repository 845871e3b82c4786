"""`dubforge init`: a commented starter manifest for a video, valid as written."""

from __future__ import annotations

import re
from pathlib import Path

from dubforge.core.errors import InputError, Problem
from dubforge.core.languages import LanguageError, base_language, normalise_language

# Pairs the bundled machine translation covers; other targets start as a script file to fill in.
BUNDLED_MT = {("en", "pt")}


def project_name(video: Path) -> str:
    name = re.sub(r"[^a-z0-9]+", "-", video.stem.lower()).strip("-")
    return name if name and name[0].isalnum() else f"project-{name}".strip("-")


def manifest_text(video: Path, targets: list[str], source_language: str = "en", project: str | None = None) -> str:
    """The manifest for `video` (its name relative to the manifest's folder) dubbed into `targets`."""
    problems, codes = [], []
    for code in [source_language, *targets]:
        try:
            codes.append(normalise_language(code))
        except LanguageError as exc:
            problems.append(Problem("--to" if code in targets else "--from", code, str(exc)))
    if not targets:
        problems.append(Problem("--to", "", "give at least one target language, e.g. --to es,de"))
    if problems:
        raise InputError(problems)
    source, langs = codes[0], codes[1:]
    project = project or project_name(video)
    lines = [
        f"# dubforge manifest for {video.name}, written by `dubforge init`. Check it with `dubforge validate`,",
        "# proofread with `dubforge prepare` (review sheets in out/review/), then `dubforge run`.",
        "version: 1",
        f"project: {project}" + " " * max(1, 36 - len(project)) + "# lowercase letters, digits and '-': names the output files",
        "",
        "source:",
        f"  video: {video.as_posix()}" + " " * max(1, 31 - len(video.as_posix())) + "# relative to this file; must stay inside this folder",
        f"  language: {source}" + " " * max(1, 28 - len(source)) + "# BCP-47 code of the spoken language",
        "  # script: media/source.srt        # known transcript (SRT, VTT, dubbing CSV or review sheet): skips ASR",
        "  # music_effects: media/me.wav     # the studio's M&E stem: the dub replaces the dialogue over it",
        "",
        "rights:",
        "  consent: false                    # set true once the people shown agreed to AI modification (lip-sync)",
        '  note: ""                          # reference to the release or contract',
        "",
        "targets:",
    ]
    for lang in langs:
        lines.append(f"  - language: {lang}")
        if (base_language(source), base_language(lang)) in BUNDLED_MT or (base_language(lang), base_language(source)) in BUNDLED_MT:
            lines.append("    translation: {from: machine}    # the bundled en<->pt model")
        else:
            lines += [
                "    translation: {from: machine}    # no bundled model for this pair: choose a backend, or a reviewed file:",
                "    # translation: {from: machine, backend: openai, endpoint: \"http://127.0.0.1:8000/v1\", model: my-llm}",
                f"    # translation: {{from: file, path: out/review/{project}.{lang}.review.xlsx}}",
            ]
        lines.append("    voice: {backend: auto}            # auto: Piper for English, espeak-ng otherwise")
    lines += [
        "",
        "# glossary:                          # names kept as they are, and fixed translations per language",
        "#   keep: [Dubforge]",
        "#   fixed: {station: {es: estación}}",
        "",
        "timing:",
        "  max_speedup: 1.25                 # total speed-up cap per line (hard cap 1.4)",
        "",
        "lipsync: {enabled: false}           # true re-renders the mouth (needs rights.consent)",
        "",
        "mix:",
        "  mode: auto                        # replace (needs an M&E stem) | voice_over | auto",
        "  loudness: ebu-r128                # ebu-r128 | atsc-a85 | netflix | web",
        "",
        "outputs:",
        "  dir: out",
        "  subtitles: [srt, vtt]",
        "  subtitle_style: {max_cps: 17, max_chars: 42, max_lines: 2, bilingual: false, burn_in: false}",
    ]
    return "\n".join(lines) + "\n"
