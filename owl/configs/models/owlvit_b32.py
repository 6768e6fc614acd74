"""Architecture of `owlvit-b32` as a ConfigDict (the values live in owl/models/configs.py VARIANTS).

python -c "import runpy; print(runpy.run_path('owl/configs/models/owlvit_b32.py')['get_config']())"
"""

from __future__ import annotations

import ml_collections

from owl.models.configs import variant_config_dict


def get_config() -> ml_collections.ConfigDict:
    """The `owlvit-b32` variant: every field of owl.models.configs.ModelConfig."""
    return variant_config_dict("owlvit-b32")
