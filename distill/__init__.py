"""distill: knowledge distillation for dense object detectors on OpenMMLab 2.x.

Importing the package first applies :mod:`distill.compat` (torch 2.13 fixes for mmengine and
mmrazor), then registers the package's datasets and metrics in mmdet's registries, so configs
only need ``custom_imports = dict(imports=['distill'])``.
"""

from . import compat

compat.apply()

from . import datasets  # noqa: E402,F401  (registers datasets/metrics)

__version__ = '0.1.0'
