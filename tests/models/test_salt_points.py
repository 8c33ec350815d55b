"""SALT's point sets (SALT-Net Eq. 2-6) against points written out by hand."""

import math

import pytest
import torch

from distill.models.salt_points import classification_points, regression_points


def _as_map(values):
    """``[C]`` values of a single location -> ``Tensor[1, C, 1, 1]``."""
    return torch.tensor(values, dtype=torch.float32)[None, :, None, None]


def test_regression_points_hand_case_five_points():
    """l,t,r,b = 1,2,3,4: corner (x_min, y_min) = (-1, -2), w = 4, h = 6.

    With s = (0.5, 0.25, 0.75, 1.0, 0.25, 0.5):
    left   (x_min, y_min + h s0)          = (-1, -2 + 3)   = (-1, 1)
    top    (x_min + w s1, y_min)          = (-1 + 1, -2)   = (0, -2)
    right  (x_min + w, y_min + h s2)      = (3, -2 + 4.5)  = (3, 2.5)
    bottom (x_min + w s3, y_min + h)      = (-1 + 4, 4)    = (3, 4)
    inner  (x_min + w s4, y_min + h s5)   = (-1 + 1, -2 + 3) = (0, 1)
    """
    points = regression_points(_as_map([1, 2, 3, 4]), _as_map([0.5, 0.25, 0.75, 1.0, 0.25, 0.5]))
    expected = _as_map([-1, 1, 0, -2, 3, 2.5, 3, 4, 0, 1])
    assert points.shape == (1, 10, 1, 1)
    torch.testing.assert_close(points, expected, rtol=0, atol=0)


def test_regression_points_hand_case_nine_points_and_two_locations():
    """N = 9 (the paper's): 4 extreme + 5 interior points, 14 scale factors.

    Location 0: l,t,r,b = 2,2,2,2 -> corner (-2, -2), w = h = 4; location 1: 0,0,8,4 -> corner
    (0, 0), w = 8, h = 4. Scale factors (same for both): s0..s3 = 0, 0.5, 1, 0.25 and the
    interior pairs (0, 0), (1, 1), (0.5, 0.5), (0.25, 0.75), (1, 0).
    """
    s = [0, 0.5, 1, 0.25, 0, 0, 1, 1, 0.5, 0.5, 0.25, 0.75, 1, 0]
    ltrb = torch.tensor([[2., 0.], [2., 0.], [2., 8.], [2., 4.]])[None, :, None, :]
    scales = torch.tensor(s, dtype=torch.float32)[None, :, None, None].expand(1, 14, 1, 2)
    points = regression_points(ltrb, scales)
    # location 0: left (-2, -2 + 0), top (-2 + 2, -2), right (2, -2 + 4), bottom (-2 + 1, 2),
    # interior (-2, -2), (2, 2), (0, 0), (-1, 1), (2, -2)
    loc0 = [-2, -2, 0, -2, 2, 2, -1, 2, -2, -2, 2, 2, 0, 0, -1, 1, 2, -2]
    # location 1: left (0, 0), top (4, 0), right (8, 4), bottom (2, 4),
    # interior (0, 0), (8, 4), (4, 2), (2, 3), (8, 0)
    loc1 = [0, 0, 4, 0, 8, 4, 2, 4, 0, 0, 8, 4, 4, 2, 2, 3, 8, 0]
    expected = torch.tensor([loc0, loc1], dtype=torch.float32).T[None, :, None, :]
    assert points.shape == (1, 18, 1, 2)
    torch.testing.assert_close(points, expected, rtol=0, atol=0)


@pytest.mark.parametrize('num_points', [4, 5, 9])
def test_regression_points_lie_on_the_box_sides_and_inside(num_points):
    """Random boxes and scale factors: the extreme points are on the sides, the rest inside."""
    g = torch.Generator().manual_seed(num_points)
    ltrb = torch.rand(2, 4, 3, 5, generator=g) * 10
    scales = torch.rand(2, 2 * num_points - 4, 3, 5, generator=g)
    pts = regression_points(ltrb, scales).reshape(2, num_points, 2, 3, 5)
    x, y = pts[:, :, 0], pts[:, :, 1]
    left, top, right, bottom = ltrb.unbind(1)
    torch.testing.assert_close(x[:, 0], -left)  # left point on the left side
    torch.testing.assert_close(y[:, 1], -top)  # top point on the top side
    torch.testing.assert_close(x[:, 2], right)  # right point on the right side
    torch.testing.assert_close(y[:, 3], bottom)  # bottom point on the bottom side
    tol = 1e-5
    assert (x >= -left[:, None] - tol).all() and (x <= right[:, None] + tol).all()
    assert (y >= -top[:, None] - tol).all() and (y <= bottom[:, None] + tol).all()
    # the free coordinate of each extreme point is its scale factor along the side
    torch.testing.assert_close(y[:, 0], -top + (top + bottom) * scales[:, 0])
    torch.testing.assert_close(x[:, 3], -left + (left + right) * scales[:, 3])


def test_regression_points_gradient_by_hand():
    """Sum of the x coordinates (N = 5): 5 x_min + w (s1 + 1 + s3 + s4) with x_min = -l,
    w = l + r, so d/dl = -5 + (s1 + 1 + s3 + s4), d/dr = s1 + 1 + s3 + s4, d/ds1 = w."""
    ltrb = _as_map([1, 2, 3, 4]).requires_grad_()
    scales = _as_map([0.5, 0.25, 0.75, 1.0, 0.25, 0.5]).requires_grad_()
    regression_points(ltrb, scales)[:, 0::2].sum().backward()
    k = 0.25 + 1 + 1.0 + 0.25
    torch.testing.assert_close(ltrb.grad.flatten(), torch.tensor([-5 + k, 0, k, 0]))
    # w = 4 multiplies s1, s3, s4 in the x coordinates; s0, s2, s5 only enter y
    torch.testing.assert_close(scales.grad.flatten(), torch.tensor([0., 4, 0, 4, 4, 0]))


def test_regression_points_gradcheck():
    g = torch.Generator().manual_seed(0)
    ltrb = (torch.rand(1, 4, 2, 3, generator=g, dtype=torch.float64) * 5).requires_grad_()
    scales = torch.rand(1, 10, 2, 3, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(regression_points, (ltrb, scales))


@pytest.mark.parametrize('channels', [0, 2, 3, 5, 7])
def test_regression_points_rejects_bad_scale_channels(channels):
    with pytest.raises(ValueError, match='2N - 4'):
        regression_points(torch.ones(1, 4, 2, 2), torch.ones(1, channels, 2, 2))


def test_classification_points_exp_and_add_by_hand():
    """Eq. 5: exp(D) * P^r; Eq. 6: D + P^r."""
    reg = _as_map([-1, 1, 0, -2, 3, 2.5, 3, 4])
    d = _as_map([0, math.log(2), math.log(0.5), 1, -1, math.log(4), 2, 0.5])
    exp_expected = _as_map([-1, 2, 0, -2 * math.e, 3 / math.e, 10, 3 * math.e ** 2,
                            4 * math.exp(0.5)])
    add_expected = _as_map([-1, 1 + math.log(2), math.log(0.5), -1, 2, 2.5 + math.log(4), 5,
                            4.5])
    torch.testing.assert_close(classification_points(reg, d, 'exp'), exp_expected)
    torch.testing.assert_close(classification_points(reg, d), exp_expected)  # default: Eq. 5
    torch.testing.assert_close(classification_points(reg, d, 'add'), add_expected)


@pytest.mark.parametrize('mode', ['exp', 'add'])
def test_classification_points_detach_the_regression_points(mode):
    """Gradients reach D but not P^r (nor the coarse box and scales behind it)."""
    g = torch.Generator().manual_seed(1)
    ltrb = (torch.rand(1, 4, 2, 2, generator=g) * 4).requires_grad_()
    scales = torch.rand(1, 6, 2, 2, generator=g).requires_grad_()
    d = torch.randn(1, 10, 2, 2, generator=g).requires_grad_()
    reg = regression_points(ltrb, scales)
    cls = classification_points(reg, d, mode)
    assert cls.requires_grad
    cls.sum().backward()
    assert ltrb.grad is None and scales.grad is None
    # d/dD of exp(D) * P is exp(D) * P; of D + P it is 1
    expected = d.detach().exp() * reg.detach() if mode == 'exp' else torch.ones_like(d)
    torch.testing.assert_close(d.grad, expected)


def test_classification_points_leaf_reg_points_get_no_gradient():
    reg = torch.randn(1, 8, 2, 2, requires_grad=True)
    d = torch.randn(1, 8, 2, 2, requires_grad=True)
    (classification_points(reg, d, 'exp') + classification_points(reg, d, 'add')).sum().backward()
    assert reg.grad is None
    assert d.grad is not None


@pytest.mark.parametrize('mode', ['mul', 'EXP', '', None])
def test_classification_points_rejects_bad_mode(mode):
    with pytest.raises(ValueError, match='cls_points'):
        classification_points(torch.zeros(1, 8, 1, 1), torch.zeros(1, 8, 1, 1), mode)
