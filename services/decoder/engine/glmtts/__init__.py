"""The ``glmtts`` engine: a GLM-TTS-format checkpoint (Llama LM over speech tokens → flow matching → HiFT vocoder)
with token-level streaming, a KV cache per stream owned by the pod, and continuous batching."""
