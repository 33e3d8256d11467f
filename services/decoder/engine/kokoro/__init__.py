"""The ``kokoro`` engine: Kokoro-82M v1.0 (Apache-2.0), int8 ONNX on onnxruntime, 24 kHz, segment-level streaming.

model.py holds the model (its file, vocabulary and voice packs), phonemes.py makes its phoneme strings from the
frontend's engine-neutral readings, engine.py schedules it, settings.py is its settings section. (Earlier name:
``embedded``.)"""
