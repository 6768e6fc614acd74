"""`owl label`: a folder of images -> a training set (COCO, YOLO, Pascal VOC).

* `owl.label.run.label_images` — queries -> Detector -> filters -> `owl.data.formats` writers,
  resumable like the eval run log.
* `owl.label.captions` — per-image queries from captions (OWL-ST's n-grams) and the captions file.
"""
