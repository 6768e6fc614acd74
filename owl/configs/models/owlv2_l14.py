"""Architecture of `owlv2-l14` as a ConfigDict (the values live in owl/models/configs.py VARIANTS).

python -c "import runpy; print(runpy.run_path('owl/configs/models/owlv2_l14.py')['get_config']())"
"""

from __future__ import annotations

import ml_collections

from owl.models.configs import variant_config_dict


def get_config() -> ml_collections.ConfigDict:
    """The `owlv2-l14` variant: every field of owl.models.configs.ModelConfig."""
    return variant_config_dict("owlv2-l14")
