"""One run folder for every process of a run: rank 0 chooses it, the others are told.

- `--run-dir` (or `--resume RUN_DIR`) names it for every process alike.
- Lightning's own launcher (`sunfish train --devices N`) re-runs the command line in each child
  process: the parent makes the folder and hands it down in SUNFISH_RUN_DIR.
- Under torchrun, rank 0 makes the folder and publishes its path in the store torchrun's agent
  hosts at MASTER_ADDR:MASTER_PORT; the other ranks (on any node) wait for it there.
- Other launchers with several processes (srun) have no such channel: `--run-dir` is required.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from torch.distributed import TCPStore

from sunfish_lib.errors import SunfishError
from sunfish_lib.runs.paths import new_run_dir

ENV = "SUNFISH_RUN_DIR"
STORE_TIMEOUT_S = 600


def shared_run_dir(name: str) -> Path:
    """The fresh `runs/<timestamp>-<name>` folder of this run, the same path on every rank."""
    if os.environ.get(ENV) and "LOCAL_RANK" in os.environ:  # a child started by Lightning's launcher
        return Path(os.environ[ENV])
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _from_torchrun_store(name)
    if int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1"))) > 1:
        raise SunfishError("several processes were started for this run, but without --run-dir each would make "
                           "its own folder; pass --run-dir runs/NAME (the same on every task)")
    path = new_run_dir(name)
    os.environ[ENV] = str(path)  # inherited by the processes Lightning's launcher starts
    return path


def _from_torchrun_store(name: str) -> Path:
    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                     timeout=timedelta(seconds=STORE_TIMEOUT_S))
    key = f"sunfish/run_dir/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if os.environ.get("RANK", "0") == "0":
        store.set(key, str(new_run_dir(name).resolve()))
    return Path(store.get(key).decode())
