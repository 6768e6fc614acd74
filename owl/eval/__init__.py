"""Evaluation: one entry point that predicts a dataset and scores it, and its parts.

* `evaluation.evaluate(detector, annotations, images, output_dir)`: the one predict-then-score
  entry point (`owl eval --model`, the trainer's AP, the ShapesWorld recipe, one-shot).
* `prompts`: templates, the prompt ensemble, embedding it once through the Detector.
* `predict`: the images of a dataset, top-k (box, class) pairs per image.
* `runlog`: the resumable run log (predictions.jsonl, run.json, detections.json).
* `metrics`: COCO and LVIS box metrics for a results file or table.
* `one_shot`: exemplar (image-query) evaluation.

Annotation and results JSON I/O is `owl.data.annotations`, below both data and evaluation.
"""
