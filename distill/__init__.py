"""distill: knowledge distillation for dense object detectors on OpenMMLab 2.x.

Importing the package first applies :mod:`distill.compat` (torch 2.13 fixes for mmengine and
mmrazor), then registers the package's datasets, metrics, heads and detectors (SALT-Net) in mmdet's
registries and its
distillation graph, losses, regions and taps in mmrazor's, so configs
only need ``custom_imports = dict(imports=['distill'])``.
"""

import sys

from . import compat

compat.apply()
_RECURSION_LIMIT = sys.getrecursionlimit()

# datasets, metrics and models go to mmdet's registries; graph, losses, regions and taps to
# mmrazor's.
from . import curves, datasets, graph, losses, models, regions  # noqa: E402,F401

compat.restore_recursion_limit(_RECURSION_LIMIT)

__version__ = '0.1.0'
