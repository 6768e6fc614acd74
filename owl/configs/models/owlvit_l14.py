"""Architecture of `owlvit-l14` as a ConfigDict (the values live in owl/models/configs.py VARIANTS).

python -c "import runpy; print(runpy.run_path('owl/configs/models/owlvit_l14.py')['get_config']())"
"""

from __future__ import annotations

import ml_collections

from owl.models.configs import variant_config_dict


def get_config() -> ml_collections.ConfigDict:
    """The `owlvit-l14` variant: every field of owl.models.configs.ModelConfig."""
    return variant_config_dict("owlvit-l14")
