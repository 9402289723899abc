"""Every fast layer equals its reference twin (resnet_np/functional/reference.py) in float64,
over every case of the shared table (resnet_np/layer_cases.py): the output, every gradient,
and the arguments after the forward (batch norm's running statistics)."""
import numpy as np
import pytest

from resnet_np import functional as F
from resnet_np.functional import reference as ref
from resnet_np.layer_cases import LAYER_CASES, run_case

TOL = 1e-12


def test_every_case_of_the_table_has_a_twin():
    assert [case.name for case in LAYER_CASES if case.twin is None] == []


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.name)
def test_fast_layer_equals_its_reference_twin(case):
    out, grads, args = run_case(case, np)
    twin_out, twin_grads, twin_args = run_case(case._replace(make=case.twin), np)
    assert out.shape == twin_out.shape
    np.testing.assert_allclose(out, twin_out, rtol=TOL, atol=TOL)
    assert len(grads) == len(twin_grads) == len(case.wrt)
    for i, grad, twin_grad in zip(case.wrt, grads, twin_grads):
        assert grad.shape == args[i].shape == twin_grad.shape
        np.testing.assert_allclose(grad, twin_grad, rtol=TOL, atol=TOL, err_msg=f"argument {i}")
    for i, (arg, twin_arg) in enumerate(zip(args, twin_args)):
        np.testing.assert_allclose(arg, twin_arg, rtol=TOL, atol=TOL,
                                   err_msg=f"argument {i} after the forward")


def test_batch_norm_twin_updates_the_running_statistics_as_torch_defines_them():
    """The one thing the table's comparison could share with the fast layer by mistake
    (both change the same arguments in place): pinned against the formula."""
    gen = np.random.default_rng(0)
    x = gen.standard_normal((3, 2, 4, 5))
    running_mean, running_var = np.array([0.5, -1.0]), np.array([2.0, 0.5])
    expected_mean = 0.9 * running_mean + 0.1 * x.mean(axis=(0, 2, 3))
    expected_var = 0.9 * running_var + 0.1 * x.var(axis=(0, 2, 3), ddof=1)
    ref.batch_norm2d_forward(x, None, None, running_mean, running_var, True, momentum=0.1)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-14)
    np.testing.assert_allclose(running_var, expected_var, rtol=1e-14)


def test_twins_are_the_definitions_on_hand_computed_examples():
    """A few numbers worked out by hand pin the twins themselves."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    out, _ = ref.conv2d_forward(x, np.ones((1, 1, 2, 2)), np.array([0.5]), stride=2)
    np.testing.assert_array_equal(out[0, 0], [[0 + 1 + 4 + 5 + 0.5, 2 + 3 + 6 + 7 + 0.5],
                                              [8 + 9 + 12 + 13 + 0.5, 10 + 11 + 14 + 15 + 0.5]])
    out, cache = ref.max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])
    dx = ref.max_pool2d_backward(np.ones((1, 1, 2, 2)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0, 0], [0, 1, 0, 1],
                                             [0, 0, 0, 0], [0, 1, 0, 1]])
    out, _ = ref.adaptive_avg_pool2d_forward(x, 1)
    assert out[0, 0, 0, 0] == 7.5
    loss, _ = ref.softmax_cross_entropy_forward(np.zeros((2, 4)), np.array([1, 3]))
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-15)


def test_the_names_the_tests_and_tutorials_know_are_the_twins():
    assert F.conv2d_forward_naive is ref.conv2d_forward
    assert F.conv2d_backward_naive is ref.conv2d_backward
    assert F.max_pool2d_backward_naive is ref.max_pool2d_backward


def test_no_window_fits_a_map_shorter_than_the_window_in_either_rounding():
    """output_length is 0 or less when the padded input is shorter than the window, with
    ceil_mode too (rounding up must not make room for a window that does not fit): the
    ONNX exporter and the layers' checks read that."""
    from resnet_np.functional.sizes import output_length
    assert output_length(2, 3, 2) < 1
    assert output_length(2, 3, 2, ceil_mode=True) == 0
    assert output_length(2, 3, 2, ceil_mode=True, drop_late_window=False) == 0
    assert output_length(3, 3, 2, ceil_mode=True) == 1 and output_length(4, 3, 2, ceil_mode=True) == 2
