"""Comparing training runs (notebook 09): curves on common axes, final metrics, config differences.

- curves: each run's logged rows (`read_metrics`) with two more x axes: `tokens` (step x
  tokens per optimizer step from its config) and `wall_s` (`time/elapsed_s`, the training
  wall time status.py logs, interpolated onto validation rows, which Lightning logs apart).
- final metrics: the held-out likelihood from `evaluate.evaluate_run` (exact NLL for ar, ELBO
  bound for masked and continuous; bits per byte where it is a likelihood) and
  sample statistics of unconditional samples: `sample_entropy`, the mean entropy of each
  sample's token histogram (`sampling.analysis.token_entropy`; repetitive text scores low),
  and `denoise_entropy`, the mean entropy of the distributions the sampler drew from
  (`sampling.analysis.step_entropy`; diffusion samplers only).
- config diff: the dotted config fields whose values differ between runs.
- noise: two likelihood estimates whose difference is under 2 combined standard errors are a tie
  (`within_noise`, DESIGN: "a comparison names what is within noise"); a model whose bound is not
  2 SE under the unigram model's NLL has not left the unigram plateau (`left_plateau`: it has learned
  no context yet, so beating it shows little). `budget_comparison` applies both at several budgets
  (notebook 08: converted vs from scratch at a quarter, half and all of the steps).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from sunfish_lib.config import Config
from sunfish_lib.data.packing import curriculum_length
from sunfish_lib.errors import SunfishError
from sunfish_lib.eval.evaluate import evaluate_run
from sunfish_lib.io.files import read_json, write_json
from sunfish_lib.runs.paths import runs_dir
from sunfish_lib.eval.quality import quality_of
from sunfish_lib.runs.discovery import step_checkpoints
from sunfish_lib.runs.registry import is_training_run, list_runs
from sunfish_lib.io.metrics import read_metrics
from sunfish_lib.sampling.analysis import step_entropy
from sunfish_lib.sampling.session import load_checkpoint, sample

METRIC_COLUMNS = ("run", "objective", "steps", "tokens", "wall_s", "train_loss", "val_loss", "eval_kind",
                  "nats_per_token", "stderr", "perplexity", "bits_per_byte", "sample_entropy", "reference_entropy",
                  "distinct_2", "judge_ppl", "reference_judge_ppl", "judge", "denoise_entropy", "passes_per_token")
"""Every figure of a run's row (compare.csv); `notebook.display.compare_rows` picks the few a reader compares."""


def pick_runs(runs: Iterable[str | Path] = (), run_dir: str | Path | None = None, newest: int = 4) -> list[Path]:
    """The training runs to compare.

    Given paths: those (each must be a training run folder). Otherwise every finished training
    run under `run_dir` (in a workbook: what 04 and 08 trained there); when it holds none, the
    `newest` finished ones under its parent (the runs folder), or under runs/ without a run_dir.
    """
    paths = [Path(p) for p in runs]
    for p in paths:
        if not is_training_run(p):
            raise SunfishError(f"runs: {p} is not a training run folder (no config.json with checkpoints/, "
                               "logs/ or export/); pass folders that `sunfish runs` lists")
    if paths:
        return paths
    here = Path(run_dir) if run_dir else None
    found = _finished(here) if here is not None and here.is_dir() else []
    if not found:
        parent = here.parent if here is not None else runs_dir()
        found = sorted(_finished(parent), key=_started)[-newest:] if parent.is_dir() else []
    if not found:
        raise SunfishError(f"no finished training runs under {here or runs_dir()} or its parent; "
                           "train one (notebook 04) or pass runs=[...]")
    return found


def _finished(root: Path) -> list[Path]:
    """Finished training runs, without overfit checks (their held-out loss means nothing; pass them explicitly)."""
    return [Path(r.path) for r in list_runs([root], status=["finished"]) if r.kind == "train" and not r.overfit_batches]


def _started(path: Path) -> str:
    return read_json(path / "status.json").get("started") or f"{os.path.getmtime(path / 'config.json'):020.3f}"


def run_labels(paths: Iterable[str | Path]) -> dict[str, Path]:
    """label -> path, labels being the paths relative to their common parent (the name for one run)."""
    paths = [Path(p).resolve() for p in paths]
    if len(paths) == 1:
        return {paths[0].name: paths[0]}
    base = Path(os.path.commonpath(paths))
    return {str(p.relative_to(base)) or p.name: p for p in paths}


def tokens_per_step(config: Mapping[str, Any]) -> int:
    """Tokens per optimizer step once any curriculum is over: micro-batch x seq_len x accumulation x devices x nodes."""
    return Config.from_dict(dict(config)).tokens_per_step  # the one rule (Config.tokens_per_step)


def tokens_after(config: Mapping[str, Any], steps: int) -> int:
    """Tokens trained on in the first `steps` optimizer steps: rows are shorter while the length curriculum runs."""
    d = config["data"]
    full = tokens_per_step(config)
    n_curr = min(steps, int(d.get("curriculum_steps", 0)))
    if n_curr <= 0:
        return steps * full
    short = sum(curriculum_length(s, d["seq_len"], d["curriculum_start_len"], d["curriculum_steps"])
                for s in range(n_curr))
    return full // d["seq_len"] * short + (steps - n_curr) * full


def curves(path: str | Path) -> list[dict[str, float]]:
    """The run's metric rows with `tokens` and `wall_s` added (wall_s only when the run logged its time)."""
    path = Path(path)
    rows = read_metrics(path)
    config = read_json(path / "config.json")
    timed = sorted((r["step"], r["time/elapsed_s"]) for r in rows if "time/elapsed_s" in r and "step" in r)
    out = []
    for r in rows:
        if "step" not in r:
            continue
        extra = {"tokens": tokens_after(config, r["step"] + 1)}  # logged steps are 0-based: step s ends s + 1 steps
        if timed:
            extra["wall_s"] = float(np.interp(r["step"], [s for s, _ in timed], [w for _, w in timed]))
        out.append({**r, **extra})
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"model": {"n_layers": 2}} -> {"model.n_layers": 2}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, key + ".") if isinstance(v, Mapping) else {key: v})
    return out


def config_diff(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """field -> {label: value} for the dotted config fields that differ between runs (None where absent)."""
    flat = {label: flatten(c) for label, c in configs.items()}
    keys = sorted({k for f in flat.values() for k in f})
    diff = {}
    for k in keys:
        values = {label: f.get(k) for label, f in flat.items()}
        if len({repr(v) for v in values.values()}) > 1:
            diff[k] = values
    return diff


def sample_statistics(path: str | Path, *, num_samples: int = 4, length: int = 64, steps: int | None = None,
                      seed: int = 0, judge: str | Path | None = None,
                      run_dir: str | Path | None = None) -> dict[str, float | None]:
    """Quality of unconditional samples (`quality.sample_quality`: entropy and distinct-2 next to held-out
    text's, judge perplexity with the workbook's ar model or `judge`) and denoise_entropy."""
    loaded = load_checkpoint(path)
    cfg = loaded.cfg
    extra = {"steps": min(steps, cfg.sample.steps)} if steps and loaded.iterative else {}
    gen = sample(loaded, mode="uncond", num_samples=num_samples, length=length, seed=seed,
                 record=loaded.iterative, **extra)
    q = quality_of(gen, loaded, judge=judge, run_dir=run_dir)
    denoise = None
    if gen.trajectory is not None and "entropy" in gen.trajectory.fields():
        denoise = float(np.mean([np.mean(step_entropy(gen.trajectory, b)) for b in range(num_samples)]))
    return {"sample_entropy": q["entropy"], "reference_entropy": q["reference_entropy"],
            "distinct_2": q["distinct_2"], "judge_ppl": q["judge_ppl"],
            "reference_judge_ppl": q["reference_judge_ppl"], "judge": q["judge"], "denoise_entropy": denoise,
            "passes_per_token": gen.forward_passes / length}  # a pass runs the batch: per sample (tradeoff.Point)


def final_metrics(path: str | Path, *, val_batches: int = 10, t_samples: int = 8, num_samples: int = 4,
                  length: int = 64, steps: int | None = None, seed: int = 0, judge: str | Path | None = None,
                  run_dir: str | Path | None = None) -> dict[str, Any]:
    """One row of the comparison table (METRIC_COLUMNS, `run` left empty for the caller)."""
    path = Path(path)
    last = {k: v for r in curves(path) for k, v in r.items()}  # last logged value of each key
    status = read_json(path / "status.json")  # steps and wall time at the end, not at the last log
    trained = int(status.get("step", last.get("step", -1) + 1))  # logged steps are 0-based
    res = evaluate_run(path, val_batches=val_batches, t_samples=t_samples, seed=seed)
    return {"run": "", "objective": res.objective, "steps": trained,
            "tokens": tokens_after(read_json(path / "config.json"), trained),
            "wall_s": status.get("elapsed_s", last.get("wall_s")),
            "train_loss": last.get("train/loss"), "val_loss": last.get("val/loss"),
            "eval_kind": res.kind, "nats_per_token": res.nats_per_token, "stderr": res.stderr,
            "perplexity": res.perplexity, "bits_per_byte": res.bits_per_byte,
            **sample_statistics(path, num_samples=num_samples, length=length, steps=steps, seed=seed, judge=judge,
                                run_dir=run_dir)}


def compare_runs(paths: Iterable[str | Path], out_dir: str | Path | None = None, **metric_kw) -> dict[str, Any]:
    """Final metrics and config diff of the runs; with out_dir, also compare.json and compare.csv there.

    metric_kw: val_batches, t_samples, num_samples, length, steps, seed, judge, run_dir (see final_metrics).
    """
    labels = run_labels(paths)
    table = [{**final_metrics(p, **metric_kw), "run": label} for label, p in labels.items()]
    diff = config_diff({label: read_json(p / "config.json") for label, p in labels.items()})
    result = {"runs": {label: str(p) for label, p in labels.items()}, "metrics": table, "config_diff": diff}
    if out_dir is not None:
        write_comparison(result, Path(out_dir))
    return result


def write_comparison(result: Mapping[str, Any], out_dir: Path) -> None:
    """compare.json (everything) and compare.csv (the metrics table, one row per run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "compare.json", result)
    with open(out_dir / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        w.writeheader()
        w.writerows({k: _cell(v) for k, v in row.items()} for row in result["metrics"])


def _cell(v: Any) -> Any:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


# ----------------------------------------------------------------------------
# What is within noise
# ----------------------------------------------------------------------------

TIE_SE = 2.0
"""Differences under this many combined standard errors are ties."""


def within_noise(a: Mapping[str, float], b: Mapping[str, float], z: float = TIE_SE) -> bool:
    """True when two estimates ({nats_per_token, stderr}) differ by less than z * sqrt(se_a^2 + se_b^2)."""
    return abs(a["nats_per_token"] - b["nats_per_token"]) < z * math.hypot(a["stderr"], b["stderr"])


def best_and_ties(rows: Mapping[str, Mapping[str, float]]) -> tuple[str | None, list[str]]:
    """(label with the lowest nats_per_token, the other labels within noise of it)."""
    if not rows:
        return None, []
    best = min(rows, key=lambda k: rows[k]["nats_per_token"])
    return best, [k for k in rows if k != best and within_noise(rows[k], rows[best])]


def left_plateau(result: Mapping[str, float], unigram_nats: float, z: float = TIE_SE) -> bool:
    """True when the estimate is more than z SE below the unigram model's NLL (nats/token): it has learned context."""
    return result["nats_per_token"] + z * result["stderr"] < unigram_nats


def evaluate_budgets(runs: Mapping[str, str | Path], budgets: Iterable[int], **eval_kw) -> dict[str, dict[int, dict]]:
    """{label: {steps: evaluate_run(...).to_dict()}} of each run at each budget: its kept checkpoint at that step
    (`runs.discovery.step_checkpoints`), its final model at its last step. eval_kw: evaluate_run's."""
    out: dict[str, dict[int, dict]] = {}
    for label, path in runs.items():
        kept, final = step_checkpoints(path), int(read_json(Path(path) / "status.json").get("step", -1))
        out[label] = {}
        for b in sorted(set(budgets)):
            if b != final and b not in kept:
                raise SunfishError(f"{path} kept no checkpoint at step {b} (it has {sorted(kept) or 'none'}); train "
                                   "it with val_every dividing the budget and keep_best >= its validations")
            out[label][b] = evaluate_run(path if b == final else kept[b], **eval_kw).to_dict()
    return out


def budget_comparison(evals: Mapping[str, Mapping[int, Mapping[str, float]]], unigram_nats: float,
                      baseline: str) -> list[dict[str, Any]]:
    """Per budget: the runs' estimates, the best and its ties, `baseline`'s gap to the best in SE, and whether
    `baseline` has left the unigram plateau. evals: `evaluate_budgets`' result."""
    rows = []
    for b in sorted({b for per in evals.values() for b in per}):
        here = {label: per[b] for label, per in evals.items() if b in per}
        best, ties = best_and_ties(here)
        base = here[baseline]
        gap = base["nats_per_token"] - here[best]["nats_per_token"]
        rows.append({"steps": b, "runs": here, "best": best, "ties": ties, "baseline": baseline,
                     "gap": gap, "gap_se": gap / math.hypot(base["stderr"], here[best]["stderr"]) if gap else 0.0,
                     "baseline_left_plateau": left_plateau(base, unigram_nats), "unigram": unigram_nats})
    return rows


def budget_lines(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One sentence per budget of `budget_comparison` rows: who leads, by how many SE, what ties, the plateau."""
    lines = []
    for r in rows:
        base, n = r["runs"][r["baseline"]], r["steps"]
        line = f"{n} step{'s' if n != 1 else ''}: {r['best']} lowest at {_pm(r['runs'][r['best']])} nats/token"
        if r["best"] != r["baseline"]:
            line += (f"; {r['baseline']} {_pm(base)} is " + ("within 2 SE of it (a tie)" if r["baseline"] in r["ties"]
                     else f"{r['gap']:.3f} nats ({r['gap_se']:.1f} SE) above it"))
        others = [t for t in r["ties"] if t != r["baseline"]]
        line += f". Ties (within 2 SE of the lowest): {', '.join(others)}." if others else "."
        state = "has left" if r["baseline_left_plateau"] else "is still on"
        lines.append(f"{line} {r['baseline'].capitalize()} {state} the unigram plateau ({r['unigram']:.3f} nats/token).")
    return lines


def _pm(r: Mapping[str, float]) -> str:
    return f"{r['nats_per_token']:.3f} ± {r['stderr']:.3f}"
