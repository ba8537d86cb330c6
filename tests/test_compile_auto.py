"""train.compile=auto: on with CUDA, on CPU past the measured break-even; the value's parsing; the run's log line."""

import pytest
import torch

from sunfish_lib.config import get_config
from sunfish_lib.errors import ConfigError
from sunfish_lib.train.module import CPU_COMPILE_BREAK_EVEN_STEPS, compile_enabled, compile_note
from sunfish_lib.train.trainer import train
from tests.train_helpers import SMALL, small_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_compiles_on_cpu_only_past_the_break_even():
    n = CPU_COMPILE_BREAK_EVEN_STEPS
    assert not compile_enabled(None, CPU, n) and compile_enabled(None, CPU, n + 1)
    assert compile_enabled(None, CUDA, 1)
    assert not compile_enabled(False, CUDA, 10 * n) and compile_enabled(True, CPU, 1)
    assert compile_note(None, CPU, n + 1) == f"compile: on (train.compile=auto, CPU: max_steps {n + 1} > the measured break-even {n})"
    assert compile_note(None, CPU, 8) == f"compile: off (train.compile=auto, CPU: max_steps 8 <= the measured break-even {n})"
    assert compile_note(False, CUDA, 8) == "compile: off (train.compile=false)"


@pytest.mark.parametrize("text,value", [("auto", None), ("AUTO", None), ("null", None), ("true", True), ("off", False)])
def test_compile_values_parse(text, value):
    assert get_config("smoke", {"train.compile": text}).train.compile is value


def test_bad_compile_value_is_one_line():
    with pytest.raises(ConfigError, match=r"^train.compile='maybe' is not a valid true, false or auto; "
                                          r"give one, e.g. train.compile=true$"):
        get_config("smoke", {"train.compile": "maybe"})


def test_train_log_says_whether_it_compiled(tmp_path):
    train(small_config("masked"), tmp_path, progress=False)
    log = (tmp_path / "train.log").read_text()
    steps = SMALL["max_steps"]
    assert f"compile: off (train.compile=auto, CPU: max_steps {steps} <= the measured break-even " \
           f"{CPU_COMPILE_BREAK_EVEN_STEPS})" in log
    assert "the first step took" not in log  # only compiled runs time their compiling first step
