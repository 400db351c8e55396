"""Build the compiled core of fa_core.

Optimisation is -O3 with no -march=native or -ffast-math: wheels must run on
any CPU of the target architecture, and the kernels rely on IEEE semantics
(log of exact zeros plus epsilon, NaN checks done in Python beforehand).
"""
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    compile_args = ["-O3"]

extensions = [
    Extension(
        "fa_core._kernels",
        ["fa_core/_kernels.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
]

setup(
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
    )
)
