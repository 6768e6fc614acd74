"""Model definitions: CLIP towers, the OWL detector, and the table of variants."""
