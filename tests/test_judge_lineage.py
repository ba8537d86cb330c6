"""An independent judge: the judge search follows a model's lineage (runs.lineage) through `train.init_from`
and conversion.json, and never scores a model with itself, its AR parent, its child or a sibling."""

from pathlib import Path

import pytest

from sunfish_lib.cli import main
from sunfish_lib.convert import continuation_config, convert
from sunfish_lib.errors import SunfishError
from sunfish_lib.eval.quality import find_judge, judge_for
from sunfish_lib.runs.lineage import lineage, model_identity, parent_of, relation
from tests.sampling_helpers import make_run
from tests.train_helpers import small_config

pytestmark = pytest.mark.slow  # trains a 2-step run (Lightning start-up, about 5 s)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A workbook folder: an AR run -> convert -> a continued masked run, and an AR run converted to ar (a sibling)."""
    from sunfish_lib.train.trainer import train

    wb = tmp_path_factory.mktemp("lineage") / "wb"
    wb.mkdir()
    (wb / "run.json").write_text("{}")
    parent = make_run(wb / "04_baselines" / "ar", "ar")
    conv = convert(parent, wb / "08" / "converted")
    cfg = continuation_config(conv.config, small_config("masked")).override(
        {"max_steps": 2, "val_every": 2, "ckpt_every": 2, "tensorboard": False})
    train(cfg, wb / "08" / "converted-r1", progress=False)
    sibling = convert(parent, wb / "08" / "as-ar", objective="ar").out_dir
    return {"wb": wb, "parent": parent, "converted": conv.out_dir, "continued": wb / "08" / "converted-r1",
            "sibling": sibling}


def test_one_identity_and_the_chain_back_to_the_ar_parent(family):
    parent, converted, continued = family["parent"].resolve(), family["converted"], family["continued"].resolve()
    for alias in (continued, continued / "export", continued / "checkpoints" / "last.ckpt",
                  continued / "export" / "model.safetensors"):
        assert model_identity(alias) == continued
    assert model_identity(parent / "export") == parent
    assert (converted / "conversion.json").is_file() and parent_of(converted) == parent  # its config names itself
    assert lineage(continued / "checkpoints" / "last.ckpt") == [continued, converted, parent]
    assert lineage(parent) == [parent]


def test_relations_in_words(family):
    parent, continued, sibling = family["parent"], family["continued"], family["sibling"]
    assert relation(parent / "export", continued) == "an ancestor of"
    assert relation(continued / "checkpoints" / "last.ckpt", parent) == "a descendant of"
    assert relation(continued / "export", continued) == "the same model as"
    assert relation(sibling, continued) == f"grown from the same parent ({parent.resolve()}) as"
    assert relation(make_run(family["wb"].parent / "stranger", "ar"), continued) is None


def test_the_search_skips_the_parent_and_finds_an_unrelated_ar_run(family, tmp_path):
    wb, continued = family["wb"], family["continued"]
    judge, note = judge_for(None, continued)
    assert judge is None and note.startswith(f"no independent judge: the ar model {family['parent']} is an ancestor "
                                             "of the sampled model; train an ar model apart from it")
    assert find_judge([wb]) == family["parent"]  # what the search took before it knew lineage
    other = make_run(wb / "08" / "ar-judge", "ar")
    try:
        judge, note = judge_for(None, continued / "checkpoints" / "last.ckpt")
        assert note is None and Path(judge.name) == other
        assert find_judge([wb], family["parent"]) == other  # the parent's own samples: not by itself either
    finally:
        import shutil

        shutil.rmtree(other)


def test_a_related_judge_named_explicitly_is_a_one_line_error(family, capsys):
    parent, continued = family["parent"], family["continued"]
    with pytest.raises(SunfishError, match=r"judge .*ar is an ancestor of the sampled model .*converted-r1: it shares"):
        judge_for(parent, continued)
    with pytest.raises(SunfishError, match="is a descendant of the sampled model"):
        judge_for(continued, parent / "export")
    assert main(["sample", str(continued), "--no-save", "--judge", str(parent / "export")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is an ancestor of the sampled model" in err


def test_the_workbooks_ar_baseline_judges_what_it_is_unrelated_to(tmp_path):
    """04's AR baseline (the longest-trained) stays the judge of the models it did not father, even when a
    newer AR run (08's judge) sits as near the top."""
    wb = tmp_path / "wb"
    masked = make_run(wb / "04_train", "masked")
    baseline = make_run(wb / "04_baselines" / "ar", "ar")
    newer = make_run(wb / "08_ar_to_diffusion" / "ar-judge", "ar")
    assert find_judge([wb], masked) == baseline
    assert find_judge([wb], baseline) == newer  # the baseline's own samples: judged by the other one
