"""Numbers computed from posteriors: diagnostics, populations, the posterior-predictive check, micrograph picking."""
