"""Real-size bundles with random weights, and the side-by-side benchmark run on them."""
