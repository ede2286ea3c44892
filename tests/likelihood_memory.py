"""Peak memory of the explicit likelihood (set-up and one image) against its estimate, in a process of its own
(tests/test_likelihood.py). The kernel's high-water mark is reset after the simulator is built, so the peak is
the engine's.

    python tests/likelihood_memory.py BOX TEMPLATES ORIENTATIONS REFINE_TOP REFINE_LEVELS   prints JSON
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
from simulation_helpers import make_priors  # noqa: E402

from cryoflow.io import structure  # noqa: E402
from cryoflow.likelihood import exact  # noqa: E402
from cryoflow.physics.projection import AtomTemplates  # noqa: E402
from cryoflow.physics.simulator import Simulator  # noqa: E402


def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


box, n_t, orient, refine_top, refine_levels = (int(a) for a in sys.argv[1:6])
atoms = structure.select_atoms(structure.load_structure(ROOT / "resources/structures/4ake.pdb"), ["A"], "CA")
coords = torch.as_tensor(atoms.getCoords(), dtype=torch.float32)
c = coords.mean(0)
theta = np.linspace(-3, 3, n_t)
templates = torch.stack([c + (coords - c) * (1 + 0.02 * t) for t in theta])
priors = make_priors(
    theta_range_A=(-3.0, 3.0),
    shift_max_A=3.0,
    defocus_range_A=(8000.0, 16000.0),
    b_factor_range_A2=(0.0, 80.0),
    snr_range=(0.5, 0.5),
    bead_sigma_range_A=(3.0, 3.0),
    mask_radius_A=30.0,
)
sim = Simulator(AtomTemplates(templates, theta.tolist(), torch.ones(len(coords)), oversample=2), box, 3.0, priors)
g = torch.Generator().manual_seed(0)
images = sim.simulate(sim.sample_theta(1, g), g).numpy()
cfg = dict(
    orientations=(orient, max(orient // 2, 1), orient),
    refine_top=refine_top,
    refine_levels=refine_levels,
    shift_points=3,
    defocus_points=4,
    b_factor_points=2,
    bead_sigma_points=1,
    max_memory_gb=1000.0,
    nuisance_refine_top=16,
    nuisance_refine_levels=2,
    nuisance_cells=64,
)
settings = exact.GridSettings(known=(), **cfg)
Path("/proc/self/clear_refs").write_text("5")  # the high-water mark from here
base = status("VmRSS:")
engine = exact.ExplicitLikelihood(sim, settings)
engine.log_likelihood(images)
peak = status("VmHWM:") - base
print(
    json.dumps(
        {
            "box": box,
            "templates": n_t,
            "orientations": list(settings.orientations),
            "estimated": engine.estimated_bytes(),
            "peak": peak,
        }
    )
)
