"""Datasets: COCO/LVIS readers, transforms, input pipeline, and the ShapesWorld generator."""
