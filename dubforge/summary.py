"""One-screen summary of a validated plan (`dubforge validate`)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from dubforge.core.plan import Plan
from dubforge.tasks.mux import delivery_suffix


def _container(codec: str) -> str:
    suffix = delivery_suffix(codec)
    return "MP4" if suffix == ".mp4" else f"MOV ({codec} picture stream-copied: MP4 cannot carry it)"


def plan_summary(plan: Plan) -> Group:
    m, media = plan.manifest, plan.media
    head = Text.assemble(
        ("✓ ", "green"), (f"{m.project}", "bold"), f" — {plan.manifest.path}\n",
        f"  source: {plan.video.name}"
        + (f" (still photo, speech {plan.portrait_audio.name})" if plan.portrait_audio else "")
        + f", {media.width}x{media.height} @ {media.fps:.3f} fps, {media.duration:.2f} s, "
        f"{media.frame_count} frames, audio: {'yes' if media.has_audio else 'none'}, language {m.source.language}\n",
        f"  transcript: {'script ' + plan.script.name if plan.script else 'ASR (' + m.asr.backend + ')'}; alignment: {m.alignment}\n",
        f"  separation: {plan.separation}; mix: {plan.mix_mode}, loudness {m.mix.loudness}; "
        f"timing: max speed-up x{m.timing.max_speedup}\n",
        f"  lip-sync: {'on' if m.lipsync.enabled else 'off'}; rights: consent={m.rights.consent} {m.rights.note}\n",
        f"  outputs: {plan.out_dir}; deliverables: {_container(media.video_codec)}",
    )
    table = Table(title=None, show_edge=False)
    for column in ("language", "translation", "voice", "lines"):
        table.add_column(column)
    for lp in plan.languages:
        voices = ", ".join(
            f"{'' if speaker == '*' else speaker + ': '}{v.backend}{'/' + v.name if v.name else ''}"
            for speaker, v in lp.voices.items()
        )
        lines = str(len(lp.translation_segments)) if lp.translation_segments is not None else "from transcript"
        table.add_row(lp.language, lp.translation, voices, lines)
    warnings = Text("".join(f"\n  ⚠ {w}" for w in plan.warnings), style="yellow")
    return Group(head, table, warnings) if plan.warnings else Group(head, table)
