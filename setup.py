"""Build script for lidvae_ext's compiled parts (docs/wheel.md):

- ``lidvae_ext/_kernels``: the operators (schemas, CPU kernels) on the LibTorch stable ABI
  (``TORCH_TARGET_VERSION`` 2.10): one binary for every torch >= 2.10, loaded with
  ``torch.ops.load_library``;
- ``lidvae_ext/_C``: a pybind11 module with the build configuration, no torch header in it;
- ``lidvae_ext/_cuda`` (CUDA builds only): the CUDA kernels, on the same stable ABI, in a
  library of their own (it links torch's CUDA libraries; loaded only beside a CUDA torch).

CUDA kernels are built when torch is a CUDA build and nvcc is found; ``FORCE_CUDA=1`` forces
them, ``FORCE_ONLY_CPU=1`` disables them. Install with ``pip install --no-build-isolation .``
(the build compiles against the torch beside it: 2.10 or later).
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# The package version without its local label; lidvae_ext/__init__.py says the same.
BASE_VERSION = "0.1.0"
# How the operators bind to torch (docs/wheel.md): "stable" = the LibTorch stable ABI, one
# binary for every torch from TORCH_MIN on (metadata: torch>=TORCH_MIN). A build with CUDA
# kernels needs a CUDA torch of the same CUDA major version: its version says which
# (0.1.0+cu130), the CPU build has no local label.
ABI_ROUTE = "stable"
TORCH_MIN = "2.10"
# TORCH_TARGET_VERSION of the stable-ABI library: torch 2.10.0 (major << 56 | minor << 48).
TORCH_TARGET_VERSION = "0x020a000000000000"
RUNTIME_REQUIREMENTS = [
    "numpy>=1.24",
    "scikit-learn>=1.2",
    "matplotlib>=3.6",
    "tqdm>=4.60",
    # OpenBLAS for the CPU GEMMs, dlopen-ed at run time (csrc/cpu/gemm.cpp); without it the
    # kernels use ATen's GEMMs (through the stable ABI).
    "scipy-openblas32>=0.3.27",
]


def _locate_cuda_home() -> None:
    """Set CUDA_HOME from nvcc itself when torch's guess would miss the toolkit.

    torch guesses CUDA_HOME as the folder above the first ``nvcc`` on PATH. When
    that ``nvcc`` is a wrapper script (``/usr/local/bin/nvcc`` calling
    ``/usr/local/cuda-X.Y/bin/nvcc``) the guess is ``/usr/local``: compiling
    works, linking ``-lcudart`` fails. ``nvcc --dryrun`` names its real folder
    (``_HERE_``), so the toolkit above it is used instead. An explicit
    CUDA_HOME / CUDA_PATH is never overridden.
    """
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return
    guess = os.path.dirname(os.path.dirname(nvcc))
    if os.path.exists(os.path.join(guess, "include", "cuda_runtime_api.h")):
        return
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return
    for line in (dry.stdout + dry.stderr).splitlines():
        if line.startswith("#$ _HERE_="):
            home = os.path.dirname(os.path.abspath(line[len("#$ _HERE_="):].strip()))
            if os.path.exists(os.path.join(home, "include", "cuda_runtime_api.h")):
                print(f"lidvae_ext: {nvcc} is not inside a CUDA toolkit; using CUDA_HOME={home} (from nvcc --dryrun)")
                os.environ["CUDA_HOME"] = home
            return


def _import_torch():
    _locate_cuda_home()  # before torch.utils.cpp_extension computes its CUDA_HOME
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # pragma: no cover - message for a common mistake
        sys.exit(
            "lidvae_ext: torch must be installed before building "
            "(pip install torch==2.13.0), and the build must run with "
            "--no-build-isolation so that it sees that torch."
        )
    return torch, cpp_extension


def _cuda_decision(torch, cpp_extension) -> tuple[bool, str]:
    if os.environ.get("FORCE_ONLY_CPU", "0") == "1":
        return False, "FORCE_ONLY_CPU=1"
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True, "FORCE_CUDA=1"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    if cpp_extension.CUDA_HOME is None:
        return False, "nvcc / CUDA_HOME not found"
    return True, f"torch CUDA {torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME}"


def _cuda_arch_list(torch) -> str:
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if arch:
        return arch
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{major}.{minor}" for major, minor in caps)
    print("lidvae_ext: no visible GPU and no TORCH_CUDA_ARCH_LIST: defaulting to 9.0")
    os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    return "9.0"


def _openblas_library() -> str:
    """Path of the scipy-openblas32 shared library, or "" when the package is absent."""
    try:
        import scipy_openblas32
    except ImportError:
        return ""
    path = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))
    return path if os.path.exists(path) else ""


def _source_hash() -> str:
    """SHA-256 over the files a build of ``_C`` depends on, as ``gpu_check.sh --source-hash`` prints it.

    The shell computes ``sha256sum`` over ``csrc/**`` and ``setup.py`` (sorted by path, C
    locale) and hashes that listing; the same text is rebuilt here.
    """
    paths = [os.path.join(folder, name).replace(os.sep, "/")
             for folder, _, names in os.walk("csrc") for name in names]
    paths.append("setup.py")
    listing = ""
    for path in sorted(paths, key=lambda p: p.encode()):
        with open(os.path.join(ROOT, path), "rb") as handle:
            listing += f"{hashlib.sha256(handle.read()).hexdigest()}  {path}\n"
    return hashlib.sha256(listing.encode()).hexdigest()


def _local_version(cuda_version: str | None) -> str:
    """Local version label of a build with CUDA kernels: ``cu130`` (CUDA 13.0)."""
    return "cu" + (cuda_version or "").replace(".", "")


def _write_build_config(directory: str, torch_version: str, with_cuda: bool, arch: str,
                        cuda_version: str | None, source_hash: str) -> None:
    """Write ``_build_config.py`` next to the compiled module (never into a source tree without it)."""
    # TORCH_VERSION: the torch compiled against. The operators (stable ABI) run with every
    # torch >= TORCH_MIN; the CUDA kernels (WITH_CUDA) with a CUDA torch of CUDA_VERSION's major.
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "_build_config.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(
            "# Generated by setup.py at build time. Do not edit.\n"
            f"TORCH_VERSION = {torch_version!r}\n"
            f"WITH_CUDA = {with_cuda!r}\n"
            f"CUDA_ARCH_LIST = {arch!r}\n"
            f"CUDA_VERSION = {cuda_version if with_cuda else None!r}\n"
            f"ABI = {ABI_ROUTE!r}\n"
            f"TORCH_MIN = {TORCH_MIN!r}\n"
            f"SOURCE_HASH = {source_hash!r}\n"
        )


def _extensions():
    torch, cpp_extension = _import_torch()
    with_cuda, reason = _cuda_decision(torch, cpp_extension)
    print(f"lidvae_ext: CUDA kernels: {'yes' if with_cuda else 'no'} ({reason})")
    arch = _cuda_arch_list(torch) if with_cuda else ""
    torch_version = torch.__version__
    cuda_version = torch.version.cuda if with_cuda else None
    _BUILD_CONFIG.update(torch_version=torch_version, with_cuda=with_cuda, arch=arch,
                         cuda_version=cuda_version, source_hash=_source_hash())
    # Every torch from TORCH_MIN on (stable ABI); a CUDA build names its CUDA flavour.
    version = BASE_VERSION + (f"+{_local_version(cuda_version)}" if with_cuda else "")
    _PACKAGE_METADATA.update(version=version,
                             install_requires=[f"torch>={TORCH_MIN}", *RUNTIME_REQUIREMENTS])

    config_defines = [
        ("LIDVAE_TORCH_VERSION", f'"{torch_version}"'),
        ("LIDVAE_CUDA_ARCH_LIST", f'"{arch}"'),
        ("LIDVAE_ABI", f'"{ABI_ROUTE}"'),
        ("LIDVAE_TORCH_MIN", f'"{TORCH_MIN}"'),
    ]
    if with_cuda:
        config_defines.append(("LIDVAE_WITH_CUDA", None))
    # -fno-trapping-math lets the compiler vectorize the activation selects (FP exceptions
    # unused); -fopenmp: the `omp simd` reductions (compile only: no OpenMP runtime is linked, threads
    # come from torch's parallel_for).
    cxx_flags = ["-O3", "-std=c++17", "-fopenmp", "-fno-trapping-math", "-fvisibility=hidden"]
    extensions = [_config_module(config_defines)]

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources = [s for s in sources if os.path.basename(s) != "python_module.cpp"]
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    defines = [("TORCH_TARGET_VERSION", TORCH_TARGET_VERSION)]
    openblas = _openblas_library()
    if openblas:
        # A last-resort location for the run-time loader (csrc/cpu/gemm.cpp): the library
        # is dlopen-ed, never linked, so the extension also builds and runs without it.
        defines.append(("LIDVAE_OPENBLAS_BUILD_PATH", f'"{openblas}"'))
    print(f"lidvae_ext: OpenBLAS (scipy-openblas32) at build time: {openblas or 'not installed'}")
    # py_limited_api: no Python symbols (the library is loaded with torch.ops.load_library) and
    # no libtorch_python on its link line; the .abi3.so name says it serves every Python.
    extensions.append(cpp_extension.CppExtension(
        name="lidvae_ext._kernels",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=defines,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-ldl"],
        py_limited_api=True,
    ))
    if with_cuda:
        cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
        cuda_sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
        extensions.append(cpp_extension.CUDAExtension(
            name="lidvae_ext._cuda",
            sources=cuda_sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            define_macros=[("TORCH_TARGET_VERSION", TORCH_TARGET_VERSION), ("LIDVAE_WITH_CUDA", None),
                           ("LIDVAE_CUDA_ARCH_LIST", f'"{arch}"')],
            extra_compile_args={"cxx": cxx_flags,
                                "nvcc": ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo",
                                         "-Xcompiler", "-fvisibility=hidden"]},
            py_limited_api=True,
        ))
    return extensions, cpp_extension


def _config_module(defines: list):
    """``lidvae_ext._C``: the pybind11 module with the build configuration (no torch headers)."""
    from setuptools import Extension

    try:
        import pybind11
    except ImportError:  # pragma: no cover - message for a common mistake
        sys.exit("lidvae_ext: pybind11 must be installed before building (pip install pybind11)")
    return Extension(
        name="lidvae_ext._C",
        sources=[os.path.join("csrc", "python_module.cpp")],
        include_dirs=[pybind11.get_include()],
        define_macros=defines,
        extra_compile_args=["-O2", "-std=c++17", "-fvisibility=hidden"],
        language="c++",
    )


_BUILD_CONFIG: dict = {}
_PACKAGE_METADATA: dict = {}
ext_modules, _cpp_extension = _extensions()


class _BuildExt(_cpp_extension.BuildExtension):
    """Builds the compiled parts with ninja, then records the build configuration beside them."""

    def run(self):
        super().run()
        target = os.path.dirname(self.get_ext_fullpath("lidvae_ext._C"))
        _write_build_config(target, **_BUILD_CONFIG)

setup(
    **_PACKAGE_METADATA,
    packages=find_packages(include=["lidvae_ext", "lidvae_ext.*"]),
    package_data={"lidvae_ext": ["py.typed"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": _BuildExt.with_options(use_ninja=True)},
)
