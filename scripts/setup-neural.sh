#!/usr/bin/env bash
# Builds .venv-neural: dubforge + the neural backends (demucs, whisperx, coqui-tts, wav2lip) on torch.
# The default .venv stays torch-free. Usage: scripts/setup-neural.sh [PYTHON]   (Python 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-python3}"
VENV="${NEURAL_VENV:-.venv-neural}"  # override for a throw-away check
BIN="$VENV/bin"
start=$(date +%s)
"$PY" -m venv "$VENV"
"$BIN/pip" install -q --upgrade pip
"$BIN/pip" install -q -e '.[test]'
# torch 2.14.1 + torchaudio 2.11 + torchcodec: the one stack on which coqui-tts imports (PyPI's
# torchaudio/torchcodec are CUDA-linked and fail beside a CPU-only torch); it runs on CPU without a GPU.
"$BIN/pip" install -q -r requirements-neural.txt
# whisperx pins torch~=2.8 and would pull ~4.8 GB of older CUDA wheels: its real needs are above.
"$BIN/pip" install -q --no-deps 'whisperx==3.8.6'
# mediapipe 0.10.21 (face mesh models inside the wheel) for the lip-sync face track, as in `make setup`.
"$BIN/pip" install -q --no-deps 'mediapipe==0.10.21'
# its real needs (protobuf 6, absl-py...) come with dubforge's own dependencies
"$BIN/python" -c "import torch, torchaudio, demucs, whisperx, TTS.api, mediapipe, dubforge.core.model_store; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
echo "neural venv ready in $(( $(date +%s) - start )) s: $(du -sh "$VENV" | cut -f1) ($BIN/python -m pytest tests/neural)"
