"""Reading and writing checkpoints in every supported format, and the download registry."""
