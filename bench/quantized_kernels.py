"""One Linear layer of the default model's shapes: fp32 / bf16 F.linear against the weight-only int8
and int4 layers (inference.quantization), at one row (a decode step) and at 256 (a prompt chunk).

    python -m bench.quantized_kernels [--threads 2] [--repeats 20]

Each figure is the best of --repeats calls (the least disturbed by other work on the machine).
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from inference.quantization import Int4Linear, Int8Linear

SHAPES = {"q_proj, o_proj": (896, 896), "k_proj, v_proj": (896, 128), "gate_proj, up_proj": (896, 4864),
          "down_proj": (4864, 896), "lm_head": (896, 151936)}


def best_ms(call, repeats):
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rows", default="1,256")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"threads {args.threads}, best of {args.repeats}, ms per call")
    print("| layer | in -> out | rows | fp32 | bf16 | int8 | int4 |")
    print("|---|---|---|---|---|---|---|")
    for name, (inputs, outputs) in SHAPES.items():
        linear = nn.Linear(inputs, outputs, bias=False)
        weights = {torch.float32: linear.weight.detach(), torch.bfloat16: linear.weight.detach().bfloat16()}
        layers = {"int8": Int8Linear(linear), "int4": Int4Linear(linear)}
        for rows in [int(n) for n in args.rows.split(",")]:
            x = torch.randn(rows, inputs)
            with torch.inference_mode():
                dense = [best_ms(lambda: F.linear(x.to(dtype), weight), args.repeats) for dtype, weight in weights.items()]
                packed = [best_ms(lambda: layer(x), args.repeats) for layer in layers.values()]
            cells = " | ".join(f"{ms:.3f}" for ms in dense + packed)
            print(f"| {name} | {inputs} -> {outputs} | {rows} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
