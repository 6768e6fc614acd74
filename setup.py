"""Package discovery, which pyproject.toml alone cannot express together with `cli/` -> `owl.cli`.

Every folder under owl/ is found (namespace discovery: with or without an __init__.py), so a new
subpackage or data folder is never left out of the wheel; `cli/` is installed as `owl.cli` so that
no top-level package `cli` is created. Everything else (metadata, dependencies, package data) is in
pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["owl", "owl.*"], exclude=["*__pycache__*"]),
        "owl.cli",
    ],
    package_dir={"owl.cli": "cli"},
)
