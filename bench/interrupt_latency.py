"""Time from a signal to the process's exit, and the SLURM signal lead time that follows from it.

    .venv/bin/python bench/interrupt_latency.py [--signal SIGTERM] [--repeats 2] [--bandwidth-mb-s 500]

Measured: `sunfish train --preset tiny` (the preset as it is) in a subprocess; once train.log shows
step 3, the signal is sent and the clock runs until the process exits (it finishes the step in
progress, writes last.ckpt, records status.json, prints its line). Also measured: this disk's
write bandwidth (256 MiB, fsynced), and the tiny checkpoint's size and median step time.

Estimated for 1.4B: one optimizer step (`--step-s-1p4b`, the step in progress finishes) + the
checkpoint (fp32 master weights + AdamW moments under bf16-mixed, `estimate.checkpoint_bytes`) written at the
stated bandwidth + what tiny took from the checkpoint in place to the exit (status, teardown). The recommended
SLURM lead (`sbatch --signal=USR1@N`) is that estimate with a 1.5x margin, rounded up to 10 s.
Prints a table, then one JSON line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_bandwidth(folder: Path, mib: int = 256) -> float:
    """Bytes/s of a fsynced sequential write into `folder`."""
    path = folder / "bw.tmp"
    block = os.urandom(1 << 20)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    dt = time.perf_counter() - t0
    path.unlink()
    return mib * (1 << 20) / dt


def signal_to_exit(run_dir: Path, sig: signal.Signals, at_step: int = 3) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "sunfish_lib.cli", "train", "--preset", "tiny", "--max-steps", "100000",
           "--set", "ckpt_every=100000", "--set", "val_every=100000", "--set", "log_every=1", "--set", "keep_best=0",
           "--run-dir", str(run_dir), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = run_dir / "train.log"
    while not (log.exists() and re.search(rf" step {at_step} ", log.read_text())):
        if proc.poll() is not None:
            raise SystemExit(proc.stderr.read()[-2000:])
        time.sleep(0.01)
    t0, wall0 = time.perf_counter(), time.time()
    proc.send_signal(sig)
    code = proc.wait()
    dt = time.perf_counter() - t0
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    saved_s = ckpt.stat().st_mtime - wall0  # signal -> checkpoint renamed into place (step finished + write)
    steps = [time.mktime(time.strptime(m, "%Y-%m-%d %H:%M:%S"))
             for m in re.findall(r"^(\S+ \S+) step \d+ lr=", log.read_text(), flags=re.M)]
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    return {"signal_to_exit_s": dt, "signal_to_saved_s": saved_s, "saved_to_exit_s": dt - saved_s, "exit_code": code, "line": proc.stderr.read().strip().splitlines()[-1],
            "ckpt_bytes": ckpt.stat().st_size,
            "step_s": statistics.median(gaps) if gaps else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signal", default="SIGTERM", choices=["SIGINT", "SIGTERM", "SIGUSR1"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bandwidth-mb-s", type=float, default=500.0, help="disk write bandwidth assumed for 1.4B")
    ap.add_argument("--step-s-1p4b", type=float, default=10.0, help="one 1.4B optimizer step (the step in progress)")
    args = ap.parse_args()

    from sunfish_lib.config import get_config
    from sunfish_lib.sizing.counts import checkpoint_bytes

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        bw = write_bandwidth(Path(tmp))
        for i in range(args.repeats):
            runs.append(signal_to_exit(Path(tmp) / f"run{i}", signal.Signals[args.signal]))
    tiny_s = statistics.median(r["signal_to_exit_s"] for r in runs)
    tiny_write_s = runs[0]["ckpt_bytes"] / bw
    fixed_s = statistics.median(r["saved_to_exit_s"] for r in runs)  # after the write: status, teardown, exit
    big = get_config("1.4B")
    big_bytes = checkpoint_bytes(big.resolved_model, "bf16-mixed", ema=big.train.ema_decay > 0)["with_optimizer"]
    big_write_s = big_bytes / (args.bandwidth_mb_s * 1e6)
    est_1p4b = args.step_s_1p4b + big_write_s + fixed_s
    lead = int(math.ceil(1.5 * est_1p4b / 10.0) * 10)
    each = ", ".join(f"{r['signal_to_exit_s']:.2f}" for r in runs)
    print(f"tiny: {args.signal} -> exit in {tiny_s:.2f} s (runs: {each}; "
          f"exit code {runs[0]['exit_code']}; step {runs[0]['step_s']:.2f} s; checkpoint {runs[0]['ckpt_bytes'] / 1e6:.1f} MB)")
    print(f"signal -> last.ckpt in place {statistics.median(r['signal_to_saved_s'] for r in runs):.2f} s "
          f"(the step in progress + {tiny_write_s:.2f} s of writing); then {fixed_s:.2f} s to exit; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"this disk: {bw / 1e6:.0f} MB/s fsynced write")
    print(f"1.4B: {args.step_s_1p4b:.0f} s step + {big_bytes / 2**30:.1f} GiB at {args.bandwidth_mb_s:.0f} MB/s "
          f"({big_write_s:.0f} s) + {fixed_s:.1f} s = {est_1p4b:.0f} s; SLURM: sbatch --signal=USR1@{lead}")
    print(json.dumps({"signal": args.signal, "tiny_signal_to_exit_s": round(tiny_s, 3),
                      "tiny_runs_s": [round(r["signal_to_exit_s"], 3) for r in runs],
                      "tiny_signal_to_saved_s": round(statistics.median(r["signal_to_saved_s"] for r in runs), 3),
                      "tiny_saved_to_exit_s": round(fixed_s, 3), "load_average": os.getloadavg()[0],
                      "tiny_exit_code": runs[0]["exit_code"], "tiny_step_s": runs[0]["step_s"],
                      "tiny_ckpt_bytes": runs[0]["ckpt_bytes"], "disk_write_mb_s": round(bw / 1e6, 1),
                      "ckpt_1p4b_gib": round(big_bytes / 2**30, 2),
                      "assumed_bandwidth_mb_s": args.bandwidth_mb_s, "assumed_step_1p4b_s": args.step_s_1p4b,
                      "est_1p4b_signal_to_exit_s": round(est_1p4b, 1), "recommended_slurm_signal": f"USR1@{lead}"}))


if __name__ == "__main__":
    main()
