"""Install the ``distill`` package; builds ``distill._C`` from ``ops/csrc`` when sources exist.

The extension is optional: without sources (or without a compiler) the package installs and
every op falls back to its pure-PyTorch reference. CUDA sources are compiled only when a CUDA
toolkit is found and ``FORCE_CUDA=1`` or a GPU is visible.
"""

import glob
import os

from setuptools import find_packages, setup


def extensions():
    sources = sorted(glob.glob('ops/csrc/**/*.cpp', recursive=True))
    if not sources:
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    import torch
    cuda_sources = sorted(glob.glob('ops/csrc/**/*.cu', recursive=True))
    use_cuda = bool(cuda_sources) and (os.getenv('FORCE_CUDA', '0') == '1'
                                       or torch.cuda.is_available())
    define_macros = [('WITH_CUDA', None)] if use_cuda else []
    kind = CUDAExtension if use_cuda else CppExtension
    ext = kind('distill._C', sources + (cuda_sources if use_cuda else []),
               define_macros=define_macros, extra_compile_args={'cxx': ['-O3']}
               if not use_cuda else {'cxx': ['-O3'], 'nvcc': ['-O3']})
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()

setup(
    name='distill',
    version='0.1.0',
    description='Knowledge distillation for dense object detectors on OpenMMLab 2.x',
    python_requires='>=3.10',
    packages=find_packages(include=['distill', 'distill.*']),
    # The stack is pinned and installed by tools/setup_env.sh (mmcv must be built without build
    # isolation); these are the ranges the package itself works with.
    install_requires=['torch>=2.1', 'mmengine>=0.10,<0.11', 'mmcv>=2.0,<2.2', 'mmdet>=3.3,<3.4',
                      'mmrazor>=1.0,<1.1', 'pycocotools', 'numpy', 'scikit-learn',
                      'scikit-image', 'tqdm'],
    entry_points={'console_scripts': [
        'distill-train=distill.cli.train:main',
        'distill-test=distill.cli.test:main',
        'distill-browse-dataset=distill.cli.browse_dataset:main',
        'distill-demo=distill.cli.demo:main',
        'distill-train-distill=distill.cli.train_distill:main',
        'distill-export-student=distill.cli.export_student:main',
        'distill-compare=distill.cli.compare:main',
        'distill-draw-regions=distill.cli.draw_regions:main',
        'distill-localization-gap=distill.cli.localization_gap:main',
    ]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
