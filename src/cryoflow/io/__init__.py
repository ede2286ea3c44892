"""File formats and the readers built on them: STAR, cryoSPARC .cs, MRC stacks, structures, micrographs."""
