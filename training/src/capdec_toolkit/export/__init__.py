"""torch -> fp32 ONNX -> int8: a CLIP and a CapDec checkpoint made into a model bundle."""
