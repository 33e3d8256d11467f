"""Where the glmtts models run, and in which dtype."""
from __future__ import annotations

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pick_device(setting: str, dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """The device, and the LM/flow dtype: bf16 (fp16 without bf16 support) on a GPU, fp32 on the CPU, unless
    ``dtype`` names one (bf16 on the CPU runs the GPU's dtype logic on a machine without one)."""
    if setting in ("", "auto"):
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(setting)
    if dtype not in ("", "auto"):
        if dtype not in DTYPES:
            raise ValueError(f"dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
        return device, DTYPES[dtype]
    if device.type == "cuda":
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, torch.float32
