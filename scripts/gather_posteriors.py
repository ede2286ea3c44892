"""Rule gather_posteriors: join the per-shard STAR files and npz archives, one shard in memory at a time."""

from cryoflow.io.star import concatenate_star
from cryoflow.logs import configure
from cryoflow.sbi import inference

log = configure(snakemake.log[0])
concatenate_star(snakemake.input.stars, snakemake.output.star)
n = inference.concatenate_npz(snakemake.input.npzs, snakemake.output.npz)
log.info("gathered %d shards: %d particles", len(snakemake.input.npzs), n)
