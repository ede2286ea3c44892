"""The checker the suite applies to the shape-annotated modules (tests/conftest.py): beartype, with PEP 484's
numeric tower (an int where a float is annotated, as Python's own typing allows)."""

from beartype import BeartypeConf, beartype

check = beartype(conf=BeartypeConf(is_pep484_tower=True))
