"""Rule validate: held-out simulations (seeded) with their posteriors and latents."""

import numpy as np
import torch

from cryoflow import diagnostics, inference, models, pipeline, training
from cryoflow.fileio import atomic_path
from cryoflow.logs import configure

log = configure(snakemake.log[0])
config = snakemake.params.config
torch.set_num_threads(snakemake.threads)
device = training.select_device(config["inference"]["device"])
model, _ = models.load_model(snakemake.input.model, device)
simulator = pipeline.load_simulator(snakemake.input, config, device=device)
n = config["validation"]["n_simulations"]
generator = torch.Generator(device=device).manual_seed(config["seed"] + 104729)
with torch.no_grad():
    theta = simulator.sample_theta(n, generator)
    nuisance = simulator.sample_nuisance(n, generator)
    images = simulator.simulate(theta, generator, nuisance).cpu().numpy()
result = inference.posterior_batches(
    model,
    inference.batched(images, config["inference"]["batch_size"]),
    n,
    grid_points=config["inference"]["grid_points"],
    grid_points_2d=config["inference"]["grid_points_2d"],
    n_samples=config["inference"]["n_samples"],
    seed=config["seed"],
    device=device,
    label="validate",
)
# the beam direction in the template frame is Rᵀ e_z, the third row of the rotation
beam = nuisance["rotation"][:, 2, :].cpu().numpy()
ensemble = np.load(snakemake.input.ensemble)
axes = diagnostics.motion_axes(ensemble["coords_A"], ensemble["theta_A"])
view = np.stack([diagnostics.view_angle_deg(beam, axis) for axis in axes], axis=-1)  # one column per θ coordinate
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(
        handle,
        theta_true=theta.cpu().numpy(),
        snr=nuisance["snr"].cpu().numpy(),
        defocus_A=(0.5 * (nuisance["defocus_u_A"] + nuisance["defocus_v_A"])).cpu().numpy(),
        beam_direction=beam,
        view_angle_deg=view[:, 0] if len(axes) == 1 else view,
        images=images[:16],
        **result,
    )
log.info("validation: %d simulations", n)
