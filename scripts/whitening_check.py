"""Rule whitening_check: latents of one random subset of particles, whitened and not, for the report's MMD."""

import numpy as np
import torch

from cryoflow.io import particles, starindex
from cryoflow.io.fileio import atomic_path
from cryoflow.logs import configure
from cryoflow.physics import preprocess
from cryoflow.sbi import inference, models, training

log = configure(snakemake.log[0])
image = snakemake.params.image
torch.set_num_threads(snakemake.threads)
device = training.select_device(snakemake.params.inference["device"])
model, _ = models.load_model(snakemake.input.model, device)
star = snakemake.input.star
source = particles.open_dataset(star, snakemake.params.source)
rows = np.array(starindex.sample_rows(len(source), snakemake.params.n_particles, snakemake.params.seed))
spectra = preprocess.read_noise_spectra(snakemake.input.noise)
result = {"rows": rows}
ctf = particles.star_ctf(source.table, rows)[0] if model.ctf_context is not None else None
for label, noise in (("whitened", spectra), ("raw", None)):
    images = preprocess.training_grid_images(source, rows, image["box_px"], image["pixel_size_A"], noise)
    batches = inference.batched(images, snakemake.params.inference["batch_size"])
    post = inference.posterior_batches(
        model, batches, len(images), grid_points=256, n_samples=1, device=device, ctf=ctf
    )
    result[f"latent_{label}"] = post["latent"]
    result[f"mean_{label}"], result[f"std_{label}"] = post["mean"], post["std"]
    log.info("%s: %d particles, median posterior σ %.2f Å", label, len(rows), np.median(post["std"]))
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(handle, **result)
