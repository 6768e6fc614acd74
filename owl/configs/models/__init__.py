"""Model-architecture configs, one per official variant (equal to `owl.models.configs.VARIANTS`)."""
