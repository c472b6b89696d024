"""The bundled demo model: a rendered world of shapes, a small CLIP trained on it, the noise ablation and its page."""
