"""Where a model came from: one identity per model, its ancestors, and whether two models are related.

Identity: a run folder, its `export/`, a checkpoint `checkpoints/*.ckpt` or the weights file inside any of
them all name one model, the run folder (resolved). A `sunfish convert --out` folder is its own identity.

Ancestry follows `train.init_from` in the model's config.json: a continued run starts from a converted
folder, whose config.json names itself (`convert.export_config`) and whose `conversion.json` records the
parent it was converted from (`source`: the resolved folder of an AR run or of a Hugging Face model). So
04's AR baseline -> 08's `converted/` -> `converted-r4/` is a chain that `ancestors` walks back.

Two models are related when their lineages (the model and its ancestors) meet: the same model, an
ancestor, a descendant, or two models grown from one parent. A judge (`eval.quality`) is never related
to the model it scores: it would share what it is meant to check (DESIGN: "a model other than the one
sampled, its parent or its child").
"""

from __future__ import annotations

from pathlib import Path

from sunfish_lib.io.files import read_json

CONVERSION = "conversion.json"
"""What `convert` found and wrote, in the converted folder; `source` names the parent."""
MAX_DEPTH = 32  # a chain longer than this is a loop of hand-edited configs, not a lineage


def model_identity(path: str | Path) -> Path:
    """The one name of the model behind `path`: a run folder for its export/, its checkpoints and weights files."""
    p = Path(str(path).strip()).expanduser().resolve()
    if p.is_file() or p.suffix in (".ckpt", ".safetensors"):
        p = p.parent
    if p.name in ("export", "checkpoints") and _is_run(p.parent):
        p = p.parent
    return p


def _is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "checkpoints").is_dir()


def parent_of(path: str | Path) -> Path | None:
    """The identity of the model `path` started from (`train.init_from`, or a conversion's source), or None."""
    me = model_identity(path)
    init = None
    for cfg in (me / "config.json", me / "export" / "config.json"):
        init = (read_json(cfg).get("train") or {}).get("init_from")
        if init:
            break
    start = model_identity(init) if init else None
    if start is None or start == me:  # a converted folder: it starts from itself; its parent is the conversion's source
        source = read_json(me / CONVERSION).get("source")
        return model_identity(source) if source else None
    return start


def lineage(path: str | Path) -> list[Path]:
    """The model's identity, then its parent, grandparent, ... (the AR run or HF model at the root last)."""
    chain = [model_identity(path)]
    while len(chain) < MAX_DEPTH:
        up = parent_of(chain[-1])
        if up is None or up in chain:
            break
        chain.append(up)
    return chain


def relation(candidate: str | Path, model: str | Path) -> str | None:
    """How `candidate` is related to `model`, worded to read "candidate is <relation> the model", or None.

    "the same model as", "an ancestor of", "a descendant of" or "grown from the same parent (P) as".
    """
    mine, theirs = lineage(candidate), lineage(model)
    if mine[0] == theirs[0]:
        return "the same model as"
    if mine[0] in theirs:
        return "an ancestor of"
    if theirs[0] in mine:
        return "a descendant of"
    shared = next((p for p in mine if p in theirs), None)
    return None if shared is None else f"grown from the same parent ({shared}) as"
