"""Q8_0 rounding of the embedded default model's weights (GGUF / llama.cpp block format).

The TypeScript loader mirrors two things from this file: which tensors it stores as Q8_0
(`is_q8_0_tensor`) and the block arithmetic (`q8_0_round`). The exported checkpoint is saved in
float32 with every Q8_0 tensor already on the Q8_0 grid and at a fixed point of the rounding, so
quantising it on load reproduces the float32 values of the file exactly.
"""

from __future__ import annotations

import numpy as np

QK8_0 = 32


def is_q8_0_tensor(name: str, shape) -> bool:
    """Whether sparrow stores tensor `name` (checkpoint name as saved) of `shape` as Q8_0.

    Rule: every tensor with at least 2 dimensions whose last dimension is a multiple of 32 is Q8_0,
    except
      - the MoE router weight, names ending in `.mlp.gate.weight`;
      - the shared-expert gate weight, names ending in `shared_expert_gate.weight`;
      - any convolution weight, names containing `conv1d`.
    Everything else stays float32: 1-D tensors (RMSNorm weights, A_log, dt_bias, biases), and any
    tensor whose last dimension is not a multiple of 32. The tied embedding / lm_head tensor
    (`model.embed_tokens.weight`) is Q8_0. Blocks run along the last dimension.
    """
    dims = tuple(int(d) for d in shape)
    if len(dims) < 2 or dims[-1] % QK8_0 != 0:
        return False
    if name.endswith(".mlp.gate.weight") or name.endswith("shared_expert_gate.weight"):
        return False
    if "conv1d" in name:
        return False
    return True


def roundf(v: np.ndarray) -> np.ndarray:
    """C roundf (half away from zero) of float32 values, exact: computed in float64, where |v|+0.5 is exact."""
    w = v.astype(np.float64)
    return (np.sign(w) * np.floor(np.abs(w) + 0.5)).astype(np.float32)


def q8_0_quantize(x: np.ndarray):
    """Quantise float32 `x` (last dim a multiple of 32) exactly as ggml's quantize_row_q8_0_ref and
    sparrow's quantizeQ8_0 (src/formats/dtype.ts) do.

    Per block of 32 along the last dim, all in float32: amax = max|x|; d = amax / 127; id = 1 / d
    (0 when d == 0); q = roundf(x * id) (round half away from zero); the stored scale is float16(d).
    Returns (q int8 [..., nblocks, 32], d float16 [..., nblocks, 1]).
    gguf-py divides (x / d) instead of multiplying by id; the two can differ by one step in rare
    near-tie cases, so this module follows the C reference that the runtime mirrors.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[-1] % QK8_0 != 0:
        raise ValueError(f"last dim {x.shape[-1]} is not a multiple of {QK8_0}")
    blocks = x.reshape(*x.shape[:-1], x.shape[-1] // QK8_0, QK8_0)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    d = (amax / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    v = (blocks * inv).astype(np.float32)
    q = roundf(v)
    if np.abs(q).max(initial=0) > 127:
        raise AssertionError("Q8_0 quant out of range")
    return q.astype(np.int8), d.astype(np.float16)


def q8_0_dequantize(q: np.ndarray, d: np.ndarray, shape) -> np.ndarray:
    """value = q * float32(float16(d)), reshaped back to `shape`."""
    return (q.astype(np.float32) * d.astype(np.float32)).reshape(shape)


def q8_0_round(x: np.ndarray) -> np.ndarray:
    """Round float32 `x` onto the Q8_0 grid (quantise, then dequantise)."""
    q, d = q8_0_quantize(x)
    return q8_0_dequantize(q, d, x.shape)


def q8_0_round_fixed_point(x: np.ndarray, max_iter: int = 4):
    """Apply q8_0_round until the values no longer change, so re-quantising the result is exact.

    Returns (values, iterations). One pass is almost always enough; a block whose scale moves by an
    ulp under re-quantisation needs a second one.
    """
    y = q8_0_round(x)
    for it in range(1, max_iter + 1):
        z = q8_0_round(y)
        if np.array_equal(z, y):
            return y, it
        y = z
    raise AssertionError("Q8_0 rounding did not reach a fixed point")


def is_on_q8_0_grid(x: np.ndarray) -> bool:
    return bool(np.array_equal(q8_0_round(np.asarray(x, dtype=np.float32)), np.asarray(x, dtype=np.float32)))
