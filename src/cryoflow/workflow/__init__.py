"""The workflow's side: config checks run when the DAG is built, and package objects built from config sections."""
