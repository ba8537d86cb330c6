"""NormMonitor: per-group gradient norms every `every` steps, update/weight ratios more rarely."""

from types import SimpleNamespace

import pytest
import torch

from sunfish_lib.train.callbacks import NormMonitor


class _Module:
    def __init__(self):
        self.logged: dict[str, float] = {}
        self._micro = 1
        self.cfg = SimpleNamespace(train=SimpleNamespace(accumulate_grad_batches=1))

    def log(self, name, value, batch_size):
        self.logged[name] = float(value)


def _step(monitor, step, w, opt):
    module, trainer = _Module(), SimpleNamespace(global_step=step)
    opt.zero_grad()
    (w ** 2).sum().backward()  # grad = 2w
    monitor.on_before_optimizer_step(trainer, module, opt)
    opt.step()
    monitor.on_train_batch_end(trainer, module, None, None, 0)
    return module.logged


def test_norm_monitor_grad_norm_every_and_update_ratio_rarely():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([{"params": [w], "group_name": "mlp"}], lr=0.1)
    monitor = NormMonitor(every=2, ratio_every=3)
    logged = {s: _step(monitor, s, w, opt) for s in range(8)}
    assert [s for s in logged if "grad_norm/mlp" in logged[s]] == [0, 2, 4, 6]
    assert [s for s in logged if "update_ratio/mlp" in logged[s]] == [0, 6]
    # step 0: w = (3, 4), grad 2w has norm 10; SGD moves w by 0.1 * 2w: ratio exactly 0.2
    assert logged[0]["grad_norm/mlp"] == pytest.approx(10.0)
    assert logged[0]["update_ratio/mlp"] == pytest.approx(0.2)
    assert monitor._before is None  # the weight copy is released after the step
