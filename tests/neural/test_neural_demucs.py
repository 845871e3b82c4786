"""demucs separation through the registry with random weights in demucs's `.th` repo format."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dubforge.models.base import create_separator
from tests.neural.conftest import NEEDS, write_stereo_mix

pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("demucs", reason=NEEDS)


def _models_yaml(tmp_path: Path, repo: Path) -> Path:
    from dubforge.core import model_store

    registry = tmp_path / "models.yaml"
    model_store.add(registry, "tiny", repo)
    return registry


def test_separates_into_stems_that_sum_to_the_mix(tmp_path, demucs_repo):
    from dubforge.media.audio import read_wav

    mix_path = write_stereo_mix(tmp_path / "mix.wav", 7.3)
    separator = create_separator("demucs", model="tiny", registry=_models_yaml(tmp_path, demucs_repo),
                                window=3.0, overlap=0.5)  # several windows and cross-fades on a short clip
    stems = separator.separate(mix_path, tmp_path / "stems")
    assert stems.mode == "replace" and stems.backend == "demucs:tiny"
    mix, rate = read_wav(mix_path)
    me, me_rate = read_wav(stems.background)
    dialogue, d_rate = read_wav(tmp_path / "stems" / "dialogue.wav")
    assert rate == me_rate == d_rate == 48_000
    assert me.shape == dialogue.shape == mix.shape
    np.testing.assert_allclose(me + dialogue, mix, atol=1e-5)
    assert np.abs(dialogue).max() > 1e-4  # the network produced something, not silence
    again = separator.separate(mix_path, tmp_path / "again")  # deterministic for equal inputs
    assert (tmp_path / "again" / "dialogue.wav").read_bytes() == (tmp_path / "stems" / "dialogue.wav").read_bytes()
    assert len(separator.fingerprint()) == 20 and again.background.name == "music_effects.wav"


def test_missing_model_offline_names_what_to_supply(tmp_path, monkeypatch):
    from dubforge.core.errors import StageError
    from dubforge.models import demucs_sep

    def offline(name):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(demucs_sep, "_fetch_published", offline)
    separator = demucs_sep.DemucsSeparator(model="htdemucs", registry=tmp_path / "models.yaml")
    with pytest.raises(StageError, match=r"dubforge models add htdemucs PATH --backend demucs"):
        separator.separate(write_stereo_mix(tmp_path / "mix.wav", 1.0), tmp_path / "out")


def test_models_check_loads_the_repo(tmp_path, demucs_repo):
    from dubforge.core import model_store

    (result,) = model_store.check(_models_yaml(tmp_path, demucs_repo))
    assert result.loads and result.sha_ok, result.message
    assert "HTDemucs" in result.message and "vocals" in result.message


_PEAK = """
import json, sys, time
from pathlib import Path
from dubforge.models.demucs_sep import DemucsSeparator

def status(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key))
    return int(line.split()[1])

sep = DemucsSeparator(model="tiny", repo=Path(sys.argv[1]), window=10.0, overlap=1.0)
sep.separate(Path(sys.argv[2]), Path(sys.argv[4]))  # warm-up on a short clip: libraries, allocator pools
base = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current RSS
t = time.perf_counter()
sep.separate(Path(sys.argv[3]), Path(sys.argv[4]))
print(json.dumps({"added_mb": (status("VmHWM:") - base) / 1024, "seconds": time.perf_counter() - t}))
"""


def test_memory_is_flat_in_clip_length(tmp_path, demucs_repo):
    warm = write_stereo_mix(tmp_path / "warm.wav", 12)
    peaks = {}
    for seconds in (30, 120):
        mix = write_stereo_mix(tmp_path / f"mix{seconds}.wav", seconds)
        out = subprocess.run([sys.executable, "-c", _PEAK, str(demucs_repo), str(warm), str(mix), str(tmp_path / "o")],
                             check=True, capture_output=True, text=True, cwd=Path(__file__).parents[2])
        peaks[seconds] = json.loads(out.stdout.strip().splitlines()[-1])
    print("demucs memory added by separation (MB) and time (s):", peaks)
    # 4x the audio: whole-file processing would add ~90 MB more (mix, stems and resampled copies)
    assert peaks[120]["added_mb"] < peaks[30]["added_mb"] + 15, peaks
