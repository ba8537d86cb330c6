"""`sunfish export RUN`: a run (or an older export) -> a Hugging Face folder, optionally pushed to the Hub.

The folder loads in `transformers` with trust_remote_code=True (AutoModelForMaskedLM for masked
and continuous models, AutoModelForCausalLM for ar) and in Sunfish (`load_for_inference`). Its
README.md model card holds the run's figures (`run_facts`): steps and tokens trained (status.json),
the held-out likelihood with its kind and SE when `--eval-batches` asks for it, and the sample
quality of the run's newest `sunfish sample` record that measured it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sunfish_lib.errors import SunfishError
from sunfish_lib.hf.hub import hub_offline, hub_reachable


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a run's model as a Hugging Face folder (trust_remote_code); "
                                      "optionally push it to the Hub")
    p.add_argument("run", help="a run folder, an exported folder or a .ckpt file")
    p.add_argument("--out", type=Path, help="folder to write (default: RUN/export, rewritten in the current layout)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub repo (ORG/NAME), "
                                                         "created if missing; needs network and HF_TOKEN")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.add_argument("--eval-batches", type=int, default=0, metavar="N",
                   help="measure the held-out likelihood (kind, SE, bits/byte) on N validation batches for the model "
                        "card (default 0: the card says 'not measured')")
    p.add_argument("--license", default="other", help="the card's license (a Hub license id; default other)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
    from sunfish_lib.io.export import export_model, load_for_inference

    src = Path(args.run).expanduser()
    if args.eval_batches < 0:
        raise SunfishError(f"--eval-batches {args.eval_batches} must be >= 0 (0: no held-out likelihood on the card)")
    if args.push_to_hub:
        _check_hub(args.push_to_hub)  # before any work: offline fails in one line
    model, cfg, tok = load_for_inference(src)
    out = args.out or (src / "export" if src.is_dir() and not (src / "model.safetensors").is_file() else src)
    if tok is None:
        raise SunfishError(f"{src} has no tokenizer (tokenizer/ or tokenizer.json); the export needs one for "
                           "AutoTokenizer: export from the run folder")
    facts = run_facts(src, cfg.to_dict(), eval_batches=args.eval_batches)
    export_model(model, cfg, Path(out), tok, card=facts, model_id=args.push_to_hub, license=args.license)
    url = push_to_hub(out, args.push_to_hub, private=args.private) if args.push_to_hub else None
    summary = {"out": str(out), "objective": cfg.diffusion.objective, "pushed": url,
               "card": {k: facts.get(k) for k in ("steps", "tokens", "likelihood", "quality")}}
    print(json.dumps(summary) if args.json else f"exported {src} -> {out} ({cfg.diffusion.objective})"
          + (f"; pushed to {url}" if url else ""))
    return 0


def run_facts(src: Path, config: dict, *, eval_batches: int = 0) -> dict:
    """The model card's figures, read from the run folder of `src` (absent ones stay absent: "not measured")."""
    # lazy: compare and evaluate import torch and the data stack; the parser above must not
    from sunfish_lib.eval.compare import tokens_after
    from sunfish_lib.eval.evaluate import evaluate_run
    from sunfish_lib.io.files import read_json
    from sunfish_lib.sampling.session import run_folder_of

    run_dir = run_folder_of(src) or (src if src.is_dir() else None)
    facts: dict = {}
    status = read_json(run_dir / "status.json") if run_dir is not None else {}
    if status.get("step") is not None:
        facts["steps"] = int(status["step"])
        facts["tokens"] = tokens_after(config, facts["steps"])
    if eval_batches:
        facts["likelihood"] = {**evaluate_run(src, val_batches=eval_batches).to_dict(), "val_batches": eval_batches}
    records = sorted((run_dir / "samples").glob("sample-*.json"), key=lambda f: f.stat().st_mtime) if run_dir else []
    for f in reversed(records):  # the newest record that measured quality
        rec = read_json(f)
        if rec.get("quality"):
            scalars = {k: v for k, v in rec["quality"].items() if not isinstance(v, (list, dict))}
            facts["quality"] = {**scalars, "settings": rec.get("settings"), "file": f"samples/{f.name}"}
            break
    return facts


def _check_hub(repo: str) -> None:
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise SunfishError(f"--push-to-hub {repo!r}: a Hub repo is ORG/NAME (e.g. alice/sunfish-tiny)")
    if hub_offline() or not hub_reachable():
        why = "HF_HUB_OFFLINE=1 is set" if hub_offline() else "the hub is unreachable"
        raise SunfishError(f"--push-to-hub {repo}: {why}; export without it here and upload the folder from a "
                           "machine with network (`sunfish export RUN --push-to-hub REPO` or `hf upload REPO DIR`)")


def push_to_hub(folder: str | Path, repo: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload an export folder to the Hub repo `repo` (created if missing); returns the repo's URL."""
    # lazy: HfApi loads the hub client; only --push-to-hub needs it
    from huggingface_hub import HfApi

    _check_hub(repo)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="Sunfish export")
    except Exception as e:  # noqa: BLE001 (auth, HTTP and validation errors all become one line)
        raise SunfishError(f"--push-to-hub {repo}: {type(e).__name__}: {str(e).splitlines()[0][:200]}; "
                           "log in with `hf auth login` or set HF_TOKEN") from None
    return str(url)
