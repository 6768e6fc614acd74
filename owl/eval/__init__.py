"""Evaluation: dataset-wide prediction and COCO / LVIS metrics."""
