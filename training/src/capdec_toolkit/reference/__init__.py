"""What the Rust runtime computes, in Python and without torch: bundles, preprocessing, the GPT-2 vocabulary,
search, the onnxruntime reference captioner with its goldens, and the caption metrics."""
