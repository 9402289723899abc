"""Inference folds each batch norm into the convolution before it: same logits, no batch-norm pass."""
import numpy as np
import pytest

import resnet_np as rn
from resnet_np.nn import BatchNorm2d, no_grad, weights_changed


def randomised(name, seed=0, **kwargs):
    model = rn.build_model(name, dtype="float64", num_classes=10, **kwargs)
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, BatchNorm2d):
            m.running_mean[...] = rng.standard_normal(m.num_features) * 0.1
            m.running_var[...] = rng.uniform(0.5, 2, m.num_features)
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.standard_normal(m.num_features) * 0.1
    return model.eval()


def batch_norm_calls(model, monkeypatch):
    calls = []
    real = BatchNorm2d.forward
    monkeypatch.setattr(BatchNorm2d, "forward", lambda self, x: calls.append(1) or real(self, x))
    return calls


@pytest.mark.parametrize("name, kwargs", [("resnet18", {}), ("resnet50", {}),
                                          ("resnext50_32x4d", {}),
                                          ("resnet18", {"cifar_stem": True})])
def test_folded_inference_equals_the_batch_norms(name, kwargs, monkeypatch):
    model = randomised(name, **kwargs)
    x = np.random.default_rng(1).standard_normal((2, 3, 40, 36))
    calls = batch_norm_calls(model, monkeypatch)
    unfolded = model(x)                       # eval mode with gradients: every batch norm runs
    assert len(calls) == sum(isinstance(m, BatchNorm2d) for m in model.modules())
    calls.clear()
    with no_grad():
        folded = model(x)
    assert not calls                          # inference: no batch-norm pass at all
    assert np.abs(folded - unfolded).max() <= 1e-12 * np.abs(unfolded).max()


def test_the_fold_follows_the_weights(monkeypatch):
    state = randomised("resnet18", seed=7).state_dict()   # built first: building bumps the version
    model = randomised("resnet18")
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32))

    def check():
        with no_grad():
            folded = model(x)
        np.testing.assert_allclose(folded, model(x), rtol=1e-12, atol=1e-13)
        return folded

    first = check()
    model.load_state_dict(state)                          # new weights and statistics
    assert not np.allclose(check(), first)
    model.train()
    out = model(x)
    model.backward(np.ones_like(out))
    rn.optim.SGD(model.parameters(), lr=0.5).step()       # a step in train mode...
    model.eval()
    check()                                               # ...and inference follows it
    model.bn1.running_var[...] *= 4                       # by hand, in place, in eval mode:
    weights_changed()                                     # say so
    check()
