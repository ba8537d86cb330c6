"""Installation check: what `sunfish check` and notebook 00 report.

Each check returns a `CheckResult` with what was found and, when it fails, what to
do about it. Nothing here raises: a broken install is reported, not crashed on.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata

from sunfish_lib.config import get_config

# (module, what it's for, required?)
PACKAGES = [
    ("torch", "tensors, autograd, SDPA", True),
    ("pytorch_lightning", "training loop, FSDP2/DDP strategies", True),
    ("datasets", "FineWeb streaming and local files", True),
    ("tokenizers", "fast BPE tokenizers", True),
    ("transformers", "HF tokenizers and AR->diffusion conversion", True),
    ("safetensors", "exported weights", True),
    ("papermill", "headless notebook runs", True),
    ("ipywidgets", "the sampling panel", True),
    ("matplotlib", "plots", True),
    ("rich", "tables and progress bars", True),
    ("tensorboard", "TensorBoard logging", False),
]

DIST_NAMES = {"pytorch_lightning": "pytorch-lightning"}

TORCH_PIN = "2.13.0"

FIX_INSTALL = "run `bash scripts/setup.sh` (or `pip install -e .[dev]` in your environment)"


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _check_import(module: str, purpose: str, required: bool) -> CheckResult:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # an install can be broken in many ways; report, don't crash
        return CheckResult(f"import {module}", not required, f"missing ({type(e).__name__}: {e}) — {purpose}", FIX_INSTALL)
    try:
        version = metadata.version(DIST_NAMES.get(module, module))
    except metadata.PackageNotFoundError:
        version = getattr(mod, "__version__", "?")
    return CheckResult(f"import {module}", True, f"{version} — {purpose}")


def _check_torch_version() -> CheckResult:
    import torch  # lazy: a missing or broken torch is reported by _check_import, not an import error here

    base = torch.__version__.split("+")[0]
    ok = base == TORCH_PIN
    cuda = f", CUDA build {torch.version.cuda}" if torch.version.cuda else ", CPU build"
    return CheckResult("torch version", ok, f"{torch.__version__}{cuda}",
                       "" if ok else f"Sunfish pins torch=={TORCH_PIN}; reinstall it (README: GPU machines)")


def _check_devices() -> CheckResult:
    import torch  # lazy: a missing or broken torch is reported by _check_import, not an import error here

    parts = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            parts.append(f"cuda:{i} {p.name} {p.total_memory / 2**30:.0f} GiB bf16={torch.cuda.is_bf16_supported()}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        parts.append("mps")
    if not parts:
        parts.append("CPU only (training defaults to fp32; that is expected without a GPU)")
    return CheckResult("accelerators", True, "; ".join(parts))


def _check_threads() -> CheckResult:
    import torch  # lazy: a missing or broken torch is reported by _check_import, not an import error here

    n = torch.get_num_threads()
    cores = os.cpu_count() or 1
    ok = n >= 1
    return CheckResult("CPU threads", ok, f"torch uses {n} of {cores} cores",
                       "" if n >= min(cores, 2) else "set OMP_NUM_THREADS to your core count")


def _check_tiny_model() -> CheckResult:
    """Build the tiny preset, run forward and backward, check the loss is finite and grads flow."""
    try:
        # lazy: torch (model.py imports it) may be missing or broken: then this check fails, the others report
        import torch
        import torch.nn.functional as F

        from sunfish_lib.model import Backbone

        cfg = get_config("tiny").resolved_model
        torch.manual_seed(0)
        model = Backbone.from_config(get_config("tiny"))
        tokens = torch.randint(0, cfg.vocab_size, (2, 32))
        t0 = time.perf_counter()
        logits = model(tokens, t=torch.rand(2))
        loss = F.cross_entropy(logits.flatten(0, 1), tokens.flatten())
        loss.backward()
        ms = (time.perf_counter() - t0) * 1e3
        grads = sum(int(p.grad is not None and p.grad.abs().sum() > 0) for p in model.parameters())
        n = sum(p.numel() for p in model.parameters())
        ok = bool(torch.isfinite(loss)) and grads > 0 and tuple(logits.shape) == (2, 32, cfg.vocab_size)
        detail = f"{n:,} params, loss {loss.item():.3f} (ln V = {torch.log(torch.tensor(float(cfg.vocab_size))):.3f}), fwd+bwd {ms:.0f} ms"
        return CheckResult("tiny model fwd+bwd", ok, detail, "" if ok else "the backbone is broken: report a bug")
    except Exception as e:
        return CheckResult("tiny model fwd+bwd", False, f"{type(e).__name__}: {e}", "the backbone is broken: report a bug")


def run_checks() -> list[CheckResult]:
    """Every installation check, in order."""
    results = [CheckResult("python", sys.version_info[:2] == (3, 11),
                           f"{platform.python_version()} on {platform.system()} {platform.machine()}",
                           "Sunfish targets Python 3.11; create the venv with python3.11")]
    results += [_check_import(*p) for p in PACKAGES]
    if all(r.ok for r in results if r.name == "import torch"):
        results += [_check_torch_version(), _check_devices(), _check_threads(), _check_tiny_model()]
    return results


def all_ok(results: list[CheckResult]) -> bool:
    return all(r.ok for r in results)


def format_results(results: list[CheckResult]) -> str:
    """Plain-text table of check results (for notebooks and logs)."""
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        line = f"{'ok  ' if r.ok else 'FAIL'}  {r.name:<{width}}  {r.detail}"
        if not r.ok and r.fix:
            line += f"\n      -> {r.fix}"
        lines.append(line)
    verdict = "all checks passed" if all_ok(results) else "some checks failed: follow the -> lines"
    return "\n".join(lines + [verdict])
