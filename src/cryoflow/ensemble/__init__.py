"""Conformational ensembles ordered along θ: normal modes, molecular dynamics, user ensembles."""
