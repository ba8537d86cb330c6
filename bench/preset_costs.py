"""What each preset needs and costs, from the estimator: the README's "What each preset needs" table.

    .venv/bin/python bench/preset_costs.py            # markdown table, then one JSON line

All figures are ESTIMATES until measured: memory per GPU is `sunfish_lib.sizing.estimate.report`
(masked objective, bf16-mixed, one GPU, the preset's micro-batch; then with activation
checkpointing); throughput assumes one RTX A6000 (154.8 TFLOP/s dense bf16 tensor peak,
NVIDIA's datasheet) at 40% model-FLOPs utilisation: tokens/s = 0.4 x peak / (training
FLOPs per token), and hours per 1B tokens = 1e9 / tokens/s / 3600. The last line printed
is one JSON object.
"""

from __future__ import annotations

import json

from sunfish_lib.config import PRESETS
from sunfish_lib.sizing.estimate import report

PEAK_FLOPS = 154.8e12  # RTX A6000, dense bf16 tensor cores
MFU = 0.40
GiB = 2**30


def preset_row(name: str) -> dict:
    plain = report(PRESETS[name].override({"diffusion.objective": "masked"}))
    ckpt = report(PRESETS[name].override({"diffusion.objective": "masked"}), activation_checkpointing=True)
    tps = MFU * PEAK_FLOPS / plain["flops_per_token"]
    small = plain["params"] < 10e6  # launch overhead, not FLOPs, bounds a model this small: no FLOP-based figure
    return {"preset": name, "params_M": round(plain["params"] / 1e6, 1),
            "gflops_per_token": round(plain["flops_per_token"] / 1e9, 2),
            "micro_batch": plain["settings"]["micro_batch"], "seq_len": plain["settings"]["seq_len"],
            "mem_gib": round(plain["memory"]["total"] / GiB, 1), "mem_ckpt_gib": round(ckpt["memory"]["total"] / GiB, 1),
            "tokens_per_s": None if small else int(round(tps, -2)),
            "hours_per_1B": None if small else round(1e9 / tps / 3600, 1)}


def markdown(rows: list[dict]) -> str:
    head = ("| preset | parameters | GFLOPs/token (train) | micro-batch x seq | memory/GPU (GiB, est.) "
            "| with activation ckpt (GiB, est.) | tokens/s on one A6000 (est.) | hours per 1B tokens (est.) |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['preset']} | {r['params_M']}M | {r['gflops_per_token']} | {r['micro_batch']} x {r['seq_len']} "
                     f"| {r['mem_gib']} | {r['mem_ckpt_gib']} | {_num(r['tokens_per_s'])} | {_num(r['hours_per_1B'])} |")
    return "\n".join(lines)


def _num(x) -> str:
    return "CPU preset" if x is None else f"{x:,}"


def main() -> None:
    rows = [preset_row(name) for name in PRESETS if name != "smoke"]  # smoke: the tests' shape, nothing to budget
    print(markdown(rows))
    print(json.dumps({"peak_flops": PEAK_FLOPS, "mfu": MFU, "rows": rows}))


if __name__ == "__main__":
    main()
