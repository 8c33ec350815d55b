"""Install the ``distill`` package; builds ``distill._C`` from ``ops/csrc`` when sources exist.

The extension is optional: without it every op falls back to its pure-PyTorch reference (and
warns once). The CUDA kernels are compiled when torch is a CUDA build and a CUDA toolkit (nvcc)
is found.
"""

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup


def extensions():
    """``distill._C``: the CPU kernels always; the CUDA kernels when torch is a CUDA build and
    a CUDA toolkit is found (for ``TORCH_CUDA_ARCH_LIST``, or without it the visible GPU, or
    without one the architectures torch was built for). ``DISTILL_NO_EXT=1`` builds nothing
    (every op then runs its pure-PyTorch reference)."""
    sources = sorted(glob.glob('ops/csrc/**/*.cpp', recursive=True))
    if not sources or os.getenv('DISTILL_NO_EXT', '0') == '1':
        return [], {}
    try:
        import torch
    except ImportError:  # an isolated build environment: no extension, the references run
        print('distill: torch is not importable here, distill._C is not built (install with '
              '`pip install --no-build-isolation -e .`)', file=sys.stderr)
        return [], {}
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    cuda_sources = sorted(glob.glob('ops/csrc/**/*.cu', recursive=True))
    use_cuda = bool(cuda_sources) and torch.version.cuda is not None and CUDA_HOME is not None
    if os.getenv('FORCE_CUDA', '0') == '1' and not use_cuda:
        print(f'distill: FORCE_CUDA=1, but torch {torch.__version__} is not a CUDA build or no '
              'CUDA toolkit was found: building the CPU kernels only', file=sys.stderr)
    if use_cuda and not os.getenv('TORCH_CUDA_ARCH_LIST') and not torch.cuda.is_available():
        # no GPU to ask (a container build): the architectures this torch was built for
        # (torch.cuda.get_arch_list() is empty without a GPU; the build's own flags are not)
        flags = getattr(torch._C, '_cuda_getArchFlags', lambda: '')() or ''
        archs = [a[3:] for a in flags.split() if a.startswith('sm_') and a[3:].isdigit()]
        os.environ['TORCH_CUDA_ARCH_LIST'] = (';'.join(f'{a[:-1]}.{a[-1]}' for a in archs)
                                              or '7.0;7.5;8.0;8.6;8.9;9.0+PTX')
    # -fopenmp: at::parallel_for is an inline `omp parallel` region (ATen/ParallelOpenMP.h) that
    # runs on one thread when the extension is compiled without it; the runtime it links is the
    # libgomp.so.1 torch has already loaded (one OpenMP runtime, torch's thread count).
    # -fopenmp-simd: the reductions over channels carry `omp simd` pragmas.
    cxx = ['-O3', '-fopenmp', '-fopenmp-simd']
    link = ['-fopenmp']
    if use_cuda:
        ext = CUDAExtension('distill._C', sources + cuda_sources,
                            define_macros=[('WITH_CUDA', None)],
                            extra_compile_args={'cxx': cxx, 'nvcc': ['-O3']},
                            extra_link_args=link)
    else:
        ext = CppExtension('distill._C', sources, extra_compile_args={'cxx': cxx},
                           extra_link_args=link)
    return [ext], {'build_ext': BuildExtension.with_options(use_ninja=True)}


def mim_resources() -> list:
    """Ship ``configs/`` and ``checkpoints/`` inside the package for a regular install.

    An editable install (``pip install -e .``, what ``make`` does) finds them in the checkout;
    a wheel gets a copy in ``distill/.mim`` (as mmdet does), so the console scripts resolve
    ``configs/tiny/...`` and the shipped teacher from any directory (``distill/paths.py``).
    """
    if not any(cmd in sys.argv for cmd in ('bdist_wheel', 'install', 'build', 'sdist')):
        return []
    here = os.path.dirname(os.path.abspath(__file__))
    mim = os.path.join(here, 'distill', '.mim')
    for name in ('configs', 'checkpoints'):
        target = os.path.join(mim, name)
        shutil.rmtree(target, ignore_errors=True)
        if os.path.isdir(os.path.join(here, name)):
            shutil.copytree(os.path.join(here, name), target)
    return ['.mim/configs/**/*.py', '.mim/checkpoints/*']


ext_modules, cmdclass = extensions()

setup(
    name='distill',
    version='0.1.0',
    description='Knowledge distillation for dense object detectors on OpenMMLab 2.x',
    python_requires='>=3.10',
    packages=find_packages(include=['distill', 'distill.*']),
    package_data={'distill': mim_resources()},
    # The stack is pinned and installed by tools/setup_env.sh (mmcv must be built without build
    # isolation); these are the ranges the package itself works with.
    install_requires=['torch>=2.1', 'mmengine>=0.10,<0.11', 'mmcv>=2.0,<2.2', 'mmdet>=3.3,<3.4',
                      'mmrazor>=1.0,<1.1', 'pycocotools', 'numpy', 'scikit-learn',
                      'scikit-image', 'tqdm'],
    entry_points={'console_scripts': [
        'distill-train=distill.cli.train:cli_main',
        'distill-test=distill.cli.test:cli_main',
        'distill-browse-dataset=distill.cli.browse_dataset:cli_main',
        'distill-demo=distill.cli.demo:cli_main',
        'distill-train-distill=distill.cli.train_distill:cli_main',
        'distill-export-student=distill.cli.export_student:cli_main',
        'distill-compare=distill.cli.compare:cli_main',
        'distill-draw-regions=distill.cli.draw_regions:cli_main',
        'distill-localization-gap=distill.cli.localization_gap:cli_main',
    ]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
