"""Synthetic datasets with a known truth: a particle set and a micrograph set written as RELION projects."""
