"""Builds the C++ CTC beam search (asr.decode._ctcdecode); everything else is in pyproject.toml.

The extension needs only a C++ compiler and the Python headers. It is optional: when it cannot be
built, asr still installs and decodes with the pure-Python reference search (slower), and
``asr.decode.beam.native_available()`` says so.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "asr.decode._ctcdecode",
            sources=["asr/decode/_ctcdecode.cpp"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17"],
            optional=True,
        )
    ]
)
