"""Inference for users: preprocessing, the Detector, image queries and result types."""
