"""The precisions a server was launched with, from its vLLM flags (``--quantization``,
``--dtype``, ``--kv-cache-dtype``), in the planner's dtype names. No pydantic here: the sweep
records these in its index, and calibration reads them back so an FP8 sweep is fitted as FP8."""

from __future__ import annotations

from typing import Any

QUANTIZATION_DTYPES = {
    "fp8": "fp8",
    "fbgemm_fp8": "fp8",
    "ptpc_fp8": "fp8",
    "modelopt": "fp8",
    "modelopt_fp4": "nvfp4",
    "nvfp4": "nvfp4",
    "mxfp4": "mxfp4",
    "awq": "int4",
    "awq_marlin": "int4",
    "gptq": "int4",
    "gptq_marlin": "int4",
    "bitsandbytes": "int4",
    "experts_int8": "int8",
    "w8a8_int8": "int8",
    "smoothquant": "int8",
}
TORCH_DTYPES = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp16": "fp16",
    "float32": "fp32",
    "float": "fp32",
    "fp32": "fp32",
}
QUANTIZED = ("fp8", "int8", "int4", "nvfp4", "mxfp4")


def _flag(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return None


def served_dtypes(serve: dict[str, Any] | None) -> dict[str, str | None]:
    """{"weight": ..., "kv": ..., "dtype": ...} of a ServeSpec dump: ``weight`` from
    --quantization (None: the checkpoint's own), ``kv`` from --kv-cache-dtype (None: auto, the
    activation dtype), ``dtype`` the activation dtype from --dtype (None: auto)."""
    serve = serve or {}
    args = [str(a) for a in serve.get("extra_args") or []]
    quant = _flag(args, "--quantization") or _flag(args, "-q")
    kv = _flag(args, "--kv-cache-dtype")
    dtype = serve.get("dtype") or _flag(args, "--dtype")
    kv_dtype = None
    if kv and kv.lower().startswith("fp8"):
        kv_dtype = "fp8"
    elif kv and kv.lower() != "auto":
        kv_dtype = TORCH_DTYPES.get(kv.lower())
    return {
        "weight": QUANTIZATION_DTYPES.get(str(quant).lower()) if quant else None,
        "kv": kv_dtype,
        "dtype": TORCH_DTYPES.get(str(dtype).lower()) if dtype else None,
    }


def resolve_weight_dtype(model_dtype: str, served: str | None, activation: str | None) -> str:
    """The weight precision a run used: the server's --quantization, else a quantized
    checkpoint's own, else --dtype, else the checkpoint's."""
    if served in QUANTIZED:
        return served
    if model_dtype in QUANTIZED:
        return model_dtype
    return activation or served or model_dtype
