"""Cross-head outputs: the teacher's head run on the student's head features (CrossKD).

CrossKD (Wang et al., CVPR 2024) feeds the student's tower feature at depth ``k`` into the
teacher's tower from its conv ``k`` on; the teacher's remaining convs, predictors and scales
give *cross-head* predictions, which mimic the teacher's own, while the student's own
predictions learn from the ground truth alone. An edge reads them on its student side::

    student=dict(output='cls_logits', of='cross', layer=-1)

``layer`` is the tower depth where the student's feature enters: ``k >= 0`` means after the
first ``k`` convs of each tower (0: the FPN feature itself); negative counts from the end of
each tower (``-1``: the feature entering each tower's last conv, CrossKD's "3 of 4" for GFL;
FCOS uses 2 of 4, ``-2``). With towers of different depths the two ends differ; a positive
``layer`` asks for the same depth in both, ``student_layer`` sets the student's separately.

The student's feature is taken before its activation, passed through a trained 1x1 adapter
where the channel counts differ (the CrossKD authors report no loss from one), re-standardised
per channel to the teacher's feature at the same place (``align=True``: the published code's
``align_scale``; the paper does not describe it), activated as the teacher's tower does, and
then run through the teacher's remaining layers with the teacher's own ``forward``: every head
whose towers are mmcv ``ConvModule`` lists (``cls_convs``, ``reg_convs``) crosses without
head-specific code. Teacher parameters stay frozen; the gradient reaches the student's tower
below ``k`` (and the adapter) through them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

import torch
from mmcv.cnn import ConvModule
from torch import Tensor, nn

from distill.errors import RecipeError
from distill.graph.outputs import NECK_TAP

#: Heads the graph can cross, by class name (looked up along the MRO), and whether their
#: ``forward_single`` reads its input beyond the towers (SALT-Net's skip connection); None:
#: a subclass that cannot be crossed although its base can (TOOD's and RTMDet's heads derive
#: from ATSS's, but TOOD has one shared tower of ``inter_convs`` and RTMDet's SepBN head a
#: tower per level).
_CROSSABLE = {
    'GFLHead': lambda head: False,
    'ATSSHead': lambda head: False,
    'DDODHead': lambda head: False,
    'FCOSHead': lambda head: False,
    'RetinaHead': lambda head: False,
    'SALTHead': lambda head: bool(head.skip),
    'TOODHead': None,
    'RTMDetHead': None,
}
#: Re-standardisation stability term (the published code's).
EPS = 1e-6


def _crossable(head: nn.Module):
    return next((_CROSSABLE[c.__name__] for c in type(head).__mro__
                 if c.__name__ in _CROSSABLE), None)


def _depth(head: nn.Module) -> int:
    return len(head.cls_convs)


def _from_end(k: int, depth: int) -> int:
    """A tower index, negative ones counted from the end of a tower of ``depth`` convs."""
    return k if k >= 0 else depth + k


@dataclass(frozen=True)
class CrossPath:
    """Where a student feature enters the teacher head.

    Attributes:
        k_s (int): The student's tower depth (its feature after ``k_s`` convs; 0: FPN).
        k_t (int): The teacher's tower conv the feature enters.
        align (bool): Re-standardise to the teacher feature's per-channel statistics.
        reads_input (bool): The teacher head reads its input beyond the towers (SALT's skip):
            the student's FPN feature is fed there too.
    """

    k_s: int
    k_t: int
    align: bool
    reads_input: bool

    @property
    def key(self) -> str:
        return f'cross_s{self.k_s}_t{self.k_t}' + ('' if self.align else '_raw')

    @staticmethod
    def tap(depth: int, tower: str) -> str:
        """The tap name of the pre-activation feature at ``depth`` (0: the neck)."""
        return 'neck' if depth == 0 else f'hold_{tower}{depth}'


def resolve(ref: dict, student: nn.Module, teacher: nn.Module, names: tuple[str, str],
            where: str) -> CrossPath:
    """The :class:`CrossPath` an edge side ``dict(output, of='cross', layer, ...)`` asks for.

    Raises:
        RecipeError: a head that cannot be crossed, or a layer outside a tower; the message
            names both heads (and configs), the layer asked for and what differs.
    """
    s_head, t_head = student.bbox_head, teacher.bbox_head
    pair = (f'{type(s_head).__name__} ({names[0]}) into {type(t_head).__name__} '
            f'({names[1]})')
    layer, s_layer = ref.get('layer', -1), ref.get('student_layer')
    for head, role in ((s_head, 'student'), (t_head, 'teacher')):
        if _crossable(head) is None:
            crossable = sorted(k for k, v in _CROSSABLE.items() if v is not None)
            raise RecipeError(f'{where}: cannot cross {pair} at layer={layer}: the {role} head '
                              f'{type(head).__name__} is not one the graph can cross (it '
                              f'crosses {crossable} and their subclasses)')
    a_s, a_t = (getattr(h, 'num_base_priors', 1) for h in (s_head, t_head))
    if a_s != a_t:  # the cross outputs are the teacher's priors, the regions the student's
        raise RecipeError(f'{where}: cannot cross {pair}: the student has {a_s} priors per '
                          f'location, the teacher {a_t}; they must be equal (the same anchor '
                          f'ratios and scales_per_octave)')
    n_s, n_t = _depth(s_head), _depth(t_head)
    for name, value in (('layer', layer), ('student_layer', s_layer)):
        if (value is not None or name == 'layer') and (isinstance(value, bool)
                                                        or not isinstance(value, int)):
            raise RecipeError(f'{where}: {name}={value!r} must be an int')
    k_t = _from_end(layer, n_t)
    k_s = _from_end(layer if s_layer is None else s_layer, n_s)
    if not 0 <= k_t <= n_t or not 0 <= k_s <= n_s:
        raise RecipeError(
            f'{where}: cannot cross {pair} at layer={layer}'
            f'{"" if s_layer is None else f", student_layer={s_layer}"}: the towers have '
            f'student {n_s} convs, teacher {n_t}; the student feature must be at '
            f'depth 0..{n_s} (here {k_s}) and enter the teacher tower at 0..{n_t} (here '
            f'{k_t}; {n_t}: its predictors only); use a negative layer (from the end of each '
            f'tower) or set student_layer')
    for head, k, role in ((s_head, k_s, 'student'), (t_head, k_t, 'teacher')):
        for tower in ('cls_convs', 'reg_convs'):
            if k and not _pre_activation_ok(getattr(head, tower)[k - 1]):
                kind = type(getattr(head, tower)[k - 1]).__name__
                raise RecipeError(f'{where}: cannot cross {pair} at layer={layer}: the '
                                  f'{role} {tower}[{k - 1}] is a {kind}, not a ConvModule '
                                  f'ordered conv, norm, act whose pre-activation output can '
                                  f'be tapped')
    align = ref.get('align', True)
    if not isinstance(align, bool):
        raise RecipeError(f'{where}: align={align!r} must be True or False')
    return CrossPath(k_s, k_t, align, _crossable(t_head)(t_head))


def _pre_activation_ok(conv: nn.Module) -> bool:
    return isinstance(conv, ConvModule) and tuple(conv.order) == ('conv', 'norm', 'act')


def hold_taps(head: nn.Module, depth: int) -> dict:
    """Recorder configs of the pre-activation feature after ``depth`` convs of both towers
    (the norm's output, or the conv's without a norm); depth 0: the neck's output."""
    if depth == 0:
        return {'neck': NECK_TAP}
    taps = {}
    for tower, short in (('cls_convs', 'cls'), ('reg_convs', 'reg')):
        conv = getattr(head, tower)[depth - 1]
        sub = conv.norm_name if conv.with_norm else 'conv'
        # cloned: the ConvModule's in-place activation overwrites its norm's output
        taps[CrossPath.tap(depth, short)] = dict(
            type='ClonedModuleOutputs', source=f'bbox_head.{tower}.{depth - 1}.{sub}')
    return taps


def channels(head: nn.Module, depth: int) -> int:
    """Channels of a head's tower feature at ``depth`` (0: its input)."""
    return head.in_channels if depth == 0 else head.feat_channels


def align_to(student: Tensor, teacher: Tensor, eps: float = EPS) -> Tensor:
    """The student feature standardised per channel, then given the teacher's statistics.

    Args:
        student (Tensor[B, C, H, W]): One level of the student's feature.
        teacher (Tensor[B, C, H, W]): The teacher's feature at the same place (detached).

    Returns:
        Tensor[B, C, H, W]: ``(s - mean_s) / (std_s + eps) * std_t + mean_t``, the means
        and (unbiased) stds per channel over the batch and the positions.
    """
    centred, _, std_s = _centred_stats(student)
    with torch.no_grad():  # the teacher's statistics are constants: no graph for them
        _, mean_t, std_t = _centred_stats(teacher)
    return centred / (std_s + eps) * std_t + mean_t


def _centred_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``x - mean``, the mean and the unbiased std per channel (over dims 0, 2, 3), by two
    plain passes: forward and backward together 1.4-1.6x faster than ``torch.var_mean``
    (Welford, over non-contiguous dims) at the tiny pair's and COCO's shapes on the CPU."""
    mean = x.mean((0, 2, 3), keepdim=True)
    centred = x - mean
    n = x.numel() // x.shape[1]
    return centred, mean, (centred.square().sum((0, 2, 3), keepdim=True) / (n - 1)).sqrt()


class _Feed(nn.Module):
    """A tower's first layer in the cross view: it returns the fed student feature of the
    level whose input it receives (the level's input tensor is the key)."""

    def __init__(self, table: dict):
        super().__init__()
        self.table = table

    def forward(self, x: Tensor) -> Tensor:
        feed = self.table.get(id(x))
        if feed is None:
            raise RecipeError('the teacher head transformed its input before its towers, so '
                              'the cross-head path cannot feed them')
        return feed


def teacher_forward_from(head: nn.Module, k: int, inputs: list[Tensor],
                         cls_feeds: list[Tensor], reg_feeds: list[Tensor]):
    """The head's own ``forward`` with its towers' first ``k`` convs replaced by the feeds.

    A shallow view of the head (parameters, scales and buffers shared; the module itself is
    not modified) whose ``cls_convs`` / ``reg_convs`` start with the fed feature of each level
    and continue with the head's convs ``k, k+1, ...``.

    Args:
        head (nn.Module): The teacher head (eval mode, frozen).
        k (int): The first tower conv that runs.
        inputs (list[Tensor[B, C, H, W]]): What the head's ``forward`` receives per level (the
            key of each level's feeds; read by heads that use their input beyond the towers).
        cls_feeds, reg_feeds (list[Tensor[B, C_t, H, W]]): The towers' inputs at conv ``k``.

    Returns:
        tuple: what the head's ``forward`` returns (per-output lists of per-level maps).
    """
    view = copy.copy(head)
    view._modules = OrderedDict(head._modules)
    for tower, feeds in (('cls_convs', cls_feeds), ('reg_convs', reg_feeds)):
        table = {id(x): f for x, f in zip(inputs, feeds)}
        view._modules[tower] = nn.ModuleList([_Feed(table), *getattr(head, tower)[k:]])
    # the class's forward: an instance attribute (a patched method) would run on the original
    return type(head).forward(view, list(inputs))


def activation(head: nn.Module, k: int, tower: str):
    """What the teacher's tower applies to its feature before conv ``k`` (none at 0)."""
    if k == 0:
        return lambda x: x
    conv = getattr(head, tower)[k - 1]
    return conv.activate if conv.with_activation else (lambda x: x)


def levels(manager, tap: str) -> list[Tensor]:
    """Per-level maps a hold tap recorded in the last step (the neck: its one tuple)."""
    recorder = manager.get_recorder(tap)
    return list(recorder.get_record_data(0)) if tap == 'neck' else list(recorder.data_buffer)


def cross_forward(path: CrossPath, student_rec, teacher_rec, head: nn.Module,
                  adapters: nn.ModuleDict) -> tuple:
    """The teacher head's outputs on the student's features of the last step.

    Args:
        path (CrossPath): Where the features enter.
        student_rec, teacher_rec (RecorderManager): The taps (:func:`hold_taps`) of both.
        head (nn.Module): The teacher head.
        adapters (nn.ModuleDict): ``<path.key>_cls`` / ``_reg`` / ``_input`` 1x1 convs where
            the channel counts differ.

    Returns:
        tuple: the teacher head's ``forward`` output on the fed features.
    """
    def fed(tap_s: str, tap_t: str, adapter: str, act) -> list[Tensor]:
        s, t = levels(student_rec, tap_s), levels(teacher_rec, tap_t)
        if len(s) != len(t):
            raise RuntimeError(f'cross path {path.key}: the student tap {tap_s!r} recorded '
                               f'{len(s)} levels in this step, the teacher tap {tap_t!r} '
                               f'{len(t)}: a head forward ran more than once')
        a = adapters[adapter] if adapter in adapters else (lambda x: x)
        return [act(align_to(a(x), y) if path.align else a(x)) for x, y in zip(s, t)]

    feeds = {tower: fed(CrossPath.tap(path.k_s, tower), CrossPath.tap(path.k_t, tower),
                        f'{path.key}_{tower}', activation(head, path.k_t, f'{tower}_convs'))
             for tower in ('cls', 'reg')}
    inputs = (fed('neck', 'neck', f'{path.key}_input', lambda x: x) if path.reads_input
              else feeds['cls'])
    return teacher_forward_from(head, path.k_t, inputs, feeds['cls'], feeds['reg'])


def adapters_for(path: CrossPath, student_head: nn.Module, teacher_head: nn.Module) -> dict:
    """The 1x1 adapters a path needs: ``{name: Conv2d}`` where the channel counts differ."""
    pairs = {f'{path.key}_{t}': (channels(student_head, path.k_s),
                                 channels(teacher_head, path.k_t)) for t in ('cls', 'reg')}
    if path.reads_input:
        pairs[f'{path.key}_input'] = (student_head.in_channels, teacher_head.in_channels)
    return {name: nn.Conv2d(c_s, c_t, 1) for name, (c_s, c_t) in pairs.items() if c_s != c_t}
