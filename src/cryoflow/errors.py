"""The error every stage raises for bad user input (standard library only, so the Snakefile can use it)."""


class InputError(ValueError):
    """Bad user input: the message names the file and the field at fault."""


class ConfigError(ValueError):
    """A config value is wrong: the message names the key (raised when the workflow's DAG is built)."""
