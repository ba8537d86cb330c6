"""`sunfish export RUN`: a run (or an older export) -> a Hugging Face folder, optionally pushed to the Hub.

The folder loads in `transformers` with trust_remote_code=True (AutoModelForMaskedLM for masked
and continuous models, AutoModelForCausalLM for ar) and in Sunfish (`load_for_inference`).
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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
    from sunfish_lib.io.export import export_model, load_for_inference

    src = Path(args.run).expanduser()
    if args.push_to_hub:
        _check_hub(args.push_to_hub)  # before any work: offline fails in one line
    model, cfg, tok = load_for_inference(src)
    out = args.out or (src / "export" if src.is_dir() and not (src / "model.safetensors").is_file() else src)
    if tok is None:
        raise SunfishError(f"{src} has no tokenizer (tokenizer/ or tokenizer.json); the export needs one for "
                           "AutoTokenizer: export from the run folder")
    export_model(model, cfg, Path(out), tok)
    url = push_to_hub(out, args.push_to_hub, private=args.private) if args.push_to_hub else None
    summary = {"out": str(out), "objective": cfg.diffusion.objective, "pushed": url}
    print(json.dumps(summary) if args.json else f"exported {src} -> {out} ({cfg.diffusion.objective})"
          + (f"; pushed to {url}" if url else ""))
    return 0


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
