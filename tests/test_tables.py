"""Tables: one precision rule for every figure (09, summary.md, report pages), the columns a reader compares."""

from sunfish_lib.eval.compare import METRIC_COLUMNS
from sunfish_lib.notebook.report import _compare_markdown
from sunfish_lib.notebook.tables import (COMPARE_COLUMNS, compare_rows, markdown_table, number, short_path,
                                         table_html)

ROW = {"run": "wb/04_train", "objective": "masked", "steps": 1500, "tokens": 3072000, "wall_s": 1194.37,
       "train_loss": 4.81234, "val_loss": 4.9, "eval_kind": "ELBO upper bound", "nats_per_token": 4.90123,
       "stderr": 0.02203, "perplexity": 134.4321, "bits_per_byte": 1.759876, "sample_entropy": 3.21456,
       "reference_entropy": 3.5, "distinct_2": 0.5561, "judge_ppl": 59.1234, "reference_judge_ppl": 115.0,
       "judge": "wb/08_ar_to_diffusion/ar-judge", "denoise_entropy": None, "passes_per_token": 0.5}


def test_one_precision_per_kind_of_figure():
    # the mix (0.02203 next to 1194 next to 59.12) at one precision per column kind
    assert [number(ROW[k], k) for k in ("stderr", "wall_s", "judge_ppl", "nats_per_token", "distinct_2")] == \
        ["0.022", "1,194", "59.1", "4.901", "0.56"]
    assert [number(v) for v in (0.02203, 1194.0, 59.123, 123.45, 0.0)] == ["0.022", "1,194", "59.123", "123.5", "0.000"]
    assert [number(v) for v in (None, float("nan"), True, 3072000, "ELBO")] == ["–", "–", "yes", "3,072,000", "ELBO"]


def test_the_columns_a_reader_compares_and_held_out_in_brackets():
    (row,) = compare_rows([ROW], {"wb/04_train": "04_train"})
    assert list(row) == list(COMPARE_COLUMNS) and len(COMPARE_COLUMNS) == 7 < len(METRIC_COLUMNS)
    assert row["run"] == "04_train" and row["likelihood"] == "4.901 ± 0.022" and row["kind"] == "ELBO upper bound"
    assert row["entropy"] == "3.215 (3.500)" and row["judge"] == "59.1 (115.0)"
    (none,) = compare_rows([{**ROW, "judge_ppl": None, "nats_per_token": None}])
    assert none["judge"] == "–" and none["likelihood"] == "–"
    html = table_html([row], COMPARE_COLUMNS)
    assert html.count("<th>") == 7 and ">1.760<" in html


def test_summary_table_is_the_same_cut_in_markdown():
    md = _compare_markdown({"metrics": [ROW]}).splitlines()
    assert md[0].startswith("| run | objective | held-out nats/token ± SE | what it is | bits/byte |")
    assert md[2] == "| wb/04_train | masked | 4.901 ± 0.022 | ELBO upper bound | 1.760 | 3.215 (3.500) | 59.1 (115.0) |"
    assert markdown_table([{"a": "x|y"}]).splitlines()[2] == "| x\\|y |"


def test_long_paths_shorten_relative_to_the_run_folder(tmp_path):
    long = str(tmp_path / "20261207-204934-workbook" / "08_ar_to_diffusion" / "converted")
    assert short_path(long, tmp_path / "20261207-204934-workbook") == "08_ar_to_diffusion/converted"
    assert short_path(long) == "…/08_ar_to_diffusion/converted"
    assert short_path("short/path") == "short/path" and short_path(None) is None and short_path(2e-3) == 2e-3


def test_a_loose_bounds_perplexity_keeps_its_size_not_its_digits():
    from sunfish_lib.notebook.workbook import likelihood_markdown

    assert number(3.1658e66, "perplexity") == "3.17e+66" and number(2.5e6) == "2.50e+06"
    rows = [{"model": "continuous", "kind": "ELBO upper bound", "nats_per_token": 153.123, "stderr": 4.838,
             "perplexity": 3.1658e66, "bits_per_byte": 120.84},
            {"model": "unigram", "kind": "unigram NLL (no context)", "nats_per_token": 6.394, "stderr": 0.0,
             "perplexity": 597.9, "bits_per_byte": None}]
    assert likelihood_markdown(rows).splitlines()[2:] == [
        "| continuous | ELBO upper bound | 153.123 | 4.838 | 3.17e+66 | 120.840 |",
        "| unigram | unigram NLL (no context) | 6.394 | 0.000 | 597.9 | – |"]


def test_long_text_wraps_so_no_table_is_wider_than_the_page():
    long = "Kitouni et al. 2024 (arXiv 2406.05183): retrieval of held-out key-value facts queried backwards"
    out = table_html([{"task": "reversal", "conditions": long}])
    assert "<td style='white-space:nowrap'>reversal</td>" in out
    assert f"<td style='min-width:16em;max-width:36em'>{long}</td>" in out
