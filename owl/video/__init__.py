"""Video: decoding frames with timestamps and rotation, tracking over Detections, writing videos."""
