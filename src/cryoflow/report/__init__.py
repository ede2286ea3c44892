"""Report figures (matplotlib) for the workflow's HTML report."""
