r"""Build the compiled core of fa_core.

Optimisation is -O3 with no -march=native or -ffast-math: wheels must run on
any CPU of the target architecture, and the kernels rely on IEEE semantics
(log of exact zeros plus epsilon, NaN checks done in Python beforehand). The
release build has no debug information (``-g0`` overrides the ``-g`` in
CPython's own compiler flags); the checked build below keeps ``-g``.

OpenMP is used when the compiler supports it (checked by building a tiny
program) and defines ``FA_CORE_OPENMP=1``; otherwise the build is serial,
silently. ``FA_CORE_NO_OPENMP=1`` forces the serial build.

Checked build
-------------
``FA_CORE_CHECKED_BUILD=1`` builds a debugging variant that CI runs the whole test suite
against (modelled on scikit-learn's ``SKLEARN_ENABLE_DEBUG_CYTHON_DIRECTIVES`` and numpy's
sanitizer jobs); never ship it:

* Cython ``boundscheck``, ``wraparound`` and ``initializedcheck`` on in every module. Directives
  in a ``.pyx`` header comment or a decorator take precedence over the ones given to
  ``cythonize``, so the kernels must not set these themselves: the build stops if one does.
* ``-O1 -g -fno-omit-frame-pointer -fno-wrapv`` (CPython compiles extensions with ``-fwrapv``,
  which makes signed overflow defined and hides it from gcc's UBSan) and, when the compiler
  can build and link a program with them (gcc and clang on Linux and macOS, checked with a
  tiny program),
  ``-fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=undefined,float-cast-overflow``
  (AddressSanitizer plus UndefinedBehaviorSanitizer, every UB report fatal). What was enabled
  is printed as ``fa_core: checked build: ...``; ``FA_CORE_CHECKED_BUILD=nosan`` keeps only
  the Cython checks. The module constant ``fa_core._kernels.CHECKED_BUILD`` is ``True`` in it.
* The Python interpreter is not instrumented, so the sanitizer runtimes must be loaded first;
  ``PYTHONMALLOC=malloc`` sends ``PyMem_Malloc`` (the kernels' scratch) to ASan's allocator
  instead of pymalloc's arenas, and a failed bounds check in a ``noexcept`` kernel is an
  "unraisable" exception that only an ``-W error`` turns into a test failure::

      FA_CORE_CHECKED_BUILD=1 python setup.py build_ext --inplace
      LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \
      ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      PYTHONMALLOC=malloc python -m pytest tests -W error::pytest.PytestUnraisableExceptionWarning

  ``.ci/run`` does this against a wheel built that way (its last step).

Switching between the normal and the checked build in one tree regenerates the C sources and
recompiles every module (stamps in ``build/`` record the directives and flags each stage last
ran with): Cython and setuptools only compare timestamps and would otherwise keep the other
mode's output.
"""
import contextlib
import glob
import os
import re
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CHECKED = os.environ.get("FA_CORE_CHECKED_BUILD", "").strip().lower() not in ("", "0")
SANITIZE = CHECKED and os.environ.get("FA_CORE_CHECKED_BUILD", "").strip().lower() != "nosan"

if sys.platform == "win32":
    compile_args = ["/Od", "/Zi"] if CHECKED else ["/O2"]
    libraries = []
else:
    # -fno-wrapv undoes CPython's -fwrapv, under which gcc's UBSan ignores signed overflow
    # -g0: the release build carries no debug information (CPython's own CFLAGS, which
    # setuptools puts first, hold -g; the last -g option wins)
    compile_args = (["-O1", "-g", "-fno-omit-frame-pointer", "-fno-wrapv"] if CHECKED
                    else ["-O3", "-g0"])
    # link libm explicitly: an extension that leaves expf / logf unversioned binds them
    # at load time to glibc's oldest versions, wrappers that set errno on every underflow
    libraries = ["m"]

# Cython directives of every module; the checked build turns the safety checks on
directives = {
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}
CHECKED_DIRECTIVES = {"boundscheck": True, "wraparound": True, "initializedcheck": True}
if CHECKED:
    directives.update(CHECKED_DIRECTIVES)

_SANITIZE_FLAGS = ["-fsanitize=address,undefined,float-cast-overflow",
                   "-fno-sanitize-recover=undefined,float-cast-overflow"]

_OPENMP_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 && omp_get_max_threads() > 0 ? 0 : 1;
}
"""

_SANITIZER_PROBE = r"""
#include <stdlib.h>
int main(int argc, char **argv) {
    int *p = malloc(sizeof(int) * 4);
    p[argc - 1] = argc;
    int r = p[0] - 1;
    free(p);
    return r;
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
    """``build_ext`` that adds OpenMP flags when the configured compiler can use them
    (and the sanitizer flags in a checked build)."""

    def _links(self, source, cflags, ldflags):
        """Whether the configured compiler compiles and links ``source`` with these flags."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(source)
            try:
                with _silenced():
                    objs = self.compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                    self.compiler.link_executable(objs, "probe", output_dir=tmp,
                                                  extra_postargs=ldflags)
            except Exception:  # CompileError, LinkError, missing compiler
                return False
        return True

    def _sanitizer_flags(self):
        """The sanitizer flags of a checked build if the compiler can link with them, or None."""
        if not SANITIZE or self.compiler.compiler_type == "msvc":
            return None
        return _SANITIZE_FLAGS if self._links(_SANITIZER_PROBE, _SANITIZE_FLAGS,
                                              _SANITIZE_FLAGS) else None

    def _openmp_flags(self):
        """(compile flags, link flags) that build and link an OpenMP program, or None."""
        if os.environ.get("FA_CORE_NO_OPENMP", "") not in ("", "0"):
            return None
        if self.compiler.compiler_type == "msvc":
            candidates = [(["/openmp"], [])]
        else:
            candidates = [(["-fopenmp"], ["-fopenmp"])]
        for cflags, ldflags in candidates:
            if self._links(_OPENMP_PROBE, cflags, ldflags):
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
        if CHECKED:
            san = self._sanitizer_flags()
            for ext in self.extensions:
                ext.extra_compile_args = list(ext.extra_compile_args) + (san or [])
                ext.extra_link_args = list(ext.extra_link_args) + (san or [])
                ext.define_macros = list(ext.define_macros) + [("FA_CORE_CHECKED", "1")]
            print("fa_core: checked build: Cython boundscheck, wraparound, initializedcheck; "
                  + " ".join(compile_args + (san or []))
                  + ("" if san else (" (no sanitizers: FA_CORE_CHECKED_BUILD=nosan)" if not SANITIZE
                                     else " (no sanitizers: the compiler cannot link with them)")))
        ext = self.extensions[0]
        config = repr((ext.extra_compile_args, ext.extra_link_args, ext.define_macros))
        if _stale(_EXT_STAMP, config, ["fa_core/_*.so", "fa_core/_*.pyd", "build/lib*",
                                       "build/temp*"]):
            self.force = True  # objects and modules built with other flags look up to date
        super().build_extensions()
        _record(_EXT_STAMP, config)


# Cython and setuptools decide what to rebuild by timestamps alone, so switching between the
# normal and the checked build in one tree must force both: a stamp per stage records the
# directives / flags it last ran with.
def _stale(stamp, config, outputs):
    """Whether outputs made with another (or an unknown) configuration may exist: a stamp that
    differs from ``config``, or no stamp but some output already there."""
    try:
        with open(stamp) as f:
            return f.read().strip() != config
    except OSError:
        return any(glob.glob(pattern) for pattern in outputs)


def _record(stamp, config):
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    with open(stamp, "w") as f:
        f.write(config + "\n")


_C_STAMP = os.path.join("build", "fa_core_cython_config")
_EXT_STAMP = os.path.join("build", "fa_core_build_config")


def _check_no_local_directives(sources):
    """Refuse a checked build of a module that sets a checked directive itself.

    A ``# cython:`` header comment or a ``@cython.boundscheck(False)``-style decorator or ``with``
    block overrides ``cythonize``'s ``compiler_directives``, so the check would silently be off.
    """
    names = "|".join(CHECKED_DIRECTIVES)
    header = re.compile(r"^#\s*cython\s*:.*\b(%s)\s*=" % names, re.M)
    local = re.compile(r"\bcython\.(%s)\s*\(" % names)
    bad = [src for src in sources
           if header.search(open(src, encoding="utf-8").read())
           or local.search(open(src, encoding="utf-8").read())]
    if bad:
        sys.exit("fa_core: checked build impossible: %s set %s themselves (move them to "
                 "setup.py's directives)" % (", ".join(bad), "/".join(CHECKED_DIRECTIVES)))


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
if CHECKED:
    _check_no_local_directives([ext.sources[0] for ext in extensions])

_c_config = repr(sorted(directives.items()))
ext_modules = cythonize(extensions, language_level=3, compiler_directives=directives,
                        force=_stale(_C_STAMP, _c_config, ["fa_core/_*.c"]))
_record(_C_STAMP, _c_config)

setup(cmdclass={"build_ext": BuildExtOpenMP}, ext_modules=ext_modules)
