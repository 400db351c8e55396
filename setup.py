"""Build the compiled core of fa_core.

Optimisation is -O3 with no -march=native or -ffast-math: wheels must run on
any CPU of the target architecture, and the kernels rely on IEEE semantics
(log of exact zeros plus epsilon, NaN checks done in Python beforehand).

OpenMP is used when the compiler supports it (checked by building a tiny
program) and defines ``FA_CORE_OPENMP=1``; otherwise the build is serial,
silently. ``FA_CORE_NO_OPENMP=1`` forces the serial build.
"""
import contextlib
import glob
import os
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

if sys.platform == "win32":
    compile_args = ["/O2"]
    libraries = []
else:
    compile_args = ["-O3"]
    # link libm explicitly: an extension that leaves expf / logf unversioned binds them
    # at load time to glibc's oldest versions, wrappers that set errno on every underflow
    libraries = ["m"]

_OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""


@contextlib.contextmanager
def _silenced():
    """Send this process's stdout/stderr (and the compiler's, a child process) to the null device."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


class BuildExtOpenMP(build_ext):
    """``build_ext`` that adds OpenMP flags when the configured compiler can use them."""

    def _openmp_flags(self):
        """(compile flags, link flags) that build and link an OpenMP program, or None."""
        if os.environ.get("FA_CORE_NO_OPENMP", "") not in ("", "0"):
            return None
        if self.compiler.compiler_type == "msvc":
            candidates = [(["/openmp"], [])]
        else:
            candidates = [(["-fopenmp"], ["-fopenmp"])]
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_probe.c")
            with open(src, "w") as f:
                f.write(_OPENMP_PROBE)
            for cflags, ldflags in candidates:
                try:
                    with _silenced():
                        objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                        self.compiler.link_executable(objs, "omp_probe", output_dir=tmp,
                                                      extra_postargs=ldflags)
                except Exception:  # CompileError, LinkError, missing compiler: all mean "no OpenMP"
                    continue
                return cflags, ldflags
        return None

    def build_extensions(self):
        flags = self._openmp_flags()
        if flags is not None:
            for ext in self.extensions:
                ext.extra_compile_args = list(ext.extra_compile_args) + flags[0]
                ext.extra_link_args = list(ext.extra_link_args) + flags[1]
                ext.define_macros = list(ext.define_macros) + [("FA_CORE_OPENMP", "1")]
        print(f"fa_core: OpenMP {'enabled' if flags else 'not available, serial build'}")
        super().build_extensions()


# every fa_core/_*.pyx is one extension module (fa_core._kernels, ...)
extensions = [
    Extension(
        "fa_core." + os.path.splitext(os.path.basename(src))[0],
        [src],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        libraries=libraries,
    )
    for src in sorted(glob.glob("fa_core/_*.pyx"))
]

setup(
    cmdclass={"build_ext": BuildExtOpenMP},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "nonecheck": False,
            "embedsignature": True,
        },
    ),
)
