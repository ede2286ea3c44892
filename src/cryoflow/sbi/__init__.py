"""Inference of θ: the neural posterior estimator, its training and amortized inference, and the explicit likelihood."""
