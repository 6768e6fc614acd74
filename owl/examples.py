"""The example image shipped inside the package, so the quick start also runs from a wheel.

`examples/` lives in the source tree only; `owl/assets/example-shapes.png` (a ShapesWorld image,
byte-identical to `examples/shapes/images/000000.png`, with a red circle among other shapes) is
package data, installed with every copy of owl. `owl example-image` prints its path, so a wheel
user can run `owl detect "$(owl example-image)" --model shapes-tiny --query "red circle"`.
Export verification runs on the same image.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

EXAMPLE_IMAGE = "example-shapes.png"


def example_image() -> Path:
    """The path of the shipped example image (a real file in any pip install of owl).

    Raises:
      FileNotFoundError: the installation lacks it (a broken install; reinstall owl).
    """
    path = Path(str(importlib.resources.files("owl").joinpath("assets", EXAMPLE_IMAGE)))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: owl's example image is missing; reinstall owl")
    return path


__all__ = ["EXAMPLE_IMAGE", "example_image"]
