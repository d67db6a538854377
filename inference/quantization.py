"""Weight-only int8 and int4 for the CPU: every Linear layer (the output layer too) keeps packed
integer weights and multiplies through torch's packed kernels.

At batch 1 a CPU is bound by reading the weights: bf16 reads 1.26 GB per token of the default
model, int8 a half of that, int4 a quarter. Activations stay floating point (the kernels take
bf16: in fp32 they are ten times slower here, so a layer casts its input to bf16 and its output
back). Whether quality holds is decided by inference.quality_gate (docs/quality-gate.json).

- int8: symmetric, one scale per output channel (torch.ops.aten._weight_int8pack_mm).
- int4: asymmetric, a scale and a zero point per group of INT4_GROUP_SIZE inputs of each output
  channel (torch.ops.aten._weight_int4pack_mm_for_cpu); the output layer stays int8.

A layer whose shape the kernels cannot take stays as it is (the kernels crash on some shapes
instead of raising, so shapes are checked here first).
"""
import logging

import torch
from torch import nn

from .errors import EngineError

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("auto", "none", "int8", "int4")
# What "auto" means on a CPU: the fastest setting that passed the quality gate (docs/quality-gate.json).
CPU_DEFAULT = "int8"
INT4_GROUP_SIZE = 32
COMPUTE_DTYPE = torch.bfloat16  # what the packed kernels multiply in


def resolve_quantize(requested, device):
    """'auto' -> CPU_DEFAULT on a CPU, 'none' elsewhere; refuses a choice that cannot work, before
    any weights are loaded."""
    requested = (requested or "auto").strip().lower()
    if requested not in QUANTIZE_CHOICES:
        raise EngineError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}; not {requested!r}")
    if requested == "auto":
        return CPU_DEFAULT if device.type == "cpu" else "none"
    if requested != "none" and device.type != "cpu":
        raise EngineError(f"{requested} quantization runs on the CPU only (torch's packed CPU kernels); "
                          f"use quantize 'none' or 'auto' on {device}")
    return requested


def int8_codes(weight):
    """(codes int8 [out, in], scales float32 [out]): w ~ codes * scale, symmetric per output channel."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    scales = scales.to(COMPUTE_DTYPE).float()  # the kernel reads them in its dtype: round first
    return torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8), scales


def int4_codes(weight, group_size=INT4_GROUP_SIZE):
    """(codes int32 0..15 [out, in], scales, zeros float32 [out, in // group_size]):
    w ~ (code - 8) * scale + zero within each group of group_size inputs, as the kernel reads it."""
    weight = weight.detach().float()
    out_features, in_features = weight.shape
    groups = weight.reshape(out_features, in_features // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    # scale and zero point are rounded to the kernel's dtype first, then the codes fitted to them
    scales = ((high - low) / 15).clamp_min(1e-8).to(COMPUTE_DTYPE).float()
    zeros = (low + 8 * scales).to(COMPUTE_DTYPE).float()
    codes = torch.round((groups - zeros[..., None]) / scales[..., None] + 8).clamp(0, 15)
    return codes.reshape(out_features, in_features).to(torch.int32), scales, zeros


def dequantize_int8(codes, scales):
    return codes.float() * scales[:, None]


def dequantize_int4(codes, scales, zeros):
    group_size = codes.shape[1] // scales.shape[1]
    groups = codes.float().reshape(codes.shape[0], -1, group_size)
    return ((groups - 8) * scales[..., None] + zeros[..., None]).reshape(codes.shape)


class _PackedLinear(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x):
        rows = x.reshape(-1, self.in_features).to(COMPUTE_DTYPE)
        out = self.multiply(rows).reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return out if self.bias is None else out + self.bias

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8Linear(_PackedLinear):
    """y = x W^T + b with W held as int8, one scale per output channel."""

    def __init__(self, linear):
        super().__init__(linear)
        codes, scales = int8_codes(linear.weight)
        self.register_buffer("weight_int8", codes)
        self.register_buffer("scales", scales.to(COMPUTE_DTYPE))

    @staticmethod
    def fits(linear):
        return linear.in_features % 32 == 0  # other widths crash the kernel (it does not check)

    def multiply(self, rows):
        return torch.ops.aten._weight_int8pack_mm(rows, self.weight_int8, self.scales)


class Int4Linear(_PackedLinear):
    """y = x W^T + b with W held as int4 in groups of INT4_GROUP_SIZE inputs (int4_codes)."""

    def __init__(self, linear, group_size=INT4_GROUP_SIZE):
        super().__init__(linear)
        codes, scales, zeros = int4_codes(linear.weight, group_size)
        self.group_size = group_size
        # the CPU kernel's own packing (two codes a byte, in its blocked order); its tile argument is unused
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        # [in_features // group_size, out_features, 2]: the layout the kernel takes
        self.register_buffer("scales_and_zeros",
                             torch.stack([scales.t(), zeros.t()], dim=-1).to(COMPUTE_DTYPE).contiguous())

    @staticmethod
    def fits(linear, group_size=INT4_GROUP_SIZE):
        return linear.in_features % group_size == 0 and linear.out_features % 16 == 0

    def multiply(self, rows):
        return torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.weight_int4, self.group_size,
                                                         self.scales_and_zeros)


LAYERS = {"int8": Int8Linear, "int4": Int4Linear}


def quantize_weights(model, kind):
    """Replace the model's Linear layers with `kind` ('int8' or 'int4') ones, in place; returns how
    many were replaced. The output layer is int8 either way (as llama.cpp's 4-bit formats keep it
    at 6 bits: with int4 there too, the gate failed). A tied input embedding keeps its own weights."""
    output_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    kept = []
    for name, linear in targets:
        layer_class = Int8Linear if linear is output_layer else LAYERS[kind]
        if not layer_class.fits(linear):
            kept.append(name)
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer_class(linear))
    if kept:
        log.warning("%d Linear layer(s) kept unquantized (shape unfit for the %s kernel): %s",
                    len(kept), kind, ", ".join(kept[:5]))
    return len(targets) - len(kept)
