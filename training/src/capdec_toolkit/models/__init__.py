"""CapDec in torch: GPT-2, the mappers, the checkpoint format, CLIP loading, CPU-independent random weights and
text-only training."""
