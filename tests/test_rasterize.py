import mrcfile
import numpy as np
import pytest

from cryoflow.io import structure
from cryoflow.physics import rasterize


def test_map_integrates_to_mass_and_is_centred(adk_ca):
    coords = adk_ca.getCoords()
    weights = structure.bead_weights(adk_ca, "CA")
    center = weights @ coords / weights.sum()
    voxel, box = 1.5, 64
    density = rasterize.rasterize_gaussians(coords, weights, 2.0, voxel, box, center)
    assert density.sum() * voxel**3 == pytest.approx(weights.sum(), rel=1e-3)
    origin = rasterize.grid_origin_A(center, voxel, box)
    axis = np.arange(box) * voxel
    z, y, x = np.meshgrid(axis + origin[2], axis + origin[1], axis + origin[0], indexing="ij")
    total = density.sum()
    centroid = np.array([(density * x).sum(), (density * y).sum(), (density * z).sum()]) / total
    np.testing.assert_allclose(centroid, center, atol=0.05)


def test_mrc_header_places_a_bead_at_its_coordinates(tmp_path):
    """Voxel size and origin in the header put the density peak where the atom is (as ChimeraX reads it)."""
    atom = np.array([[12.0, -3.0, 40.5]])
    center = np.array([10.0, 0.0, 38.0])
    voxel, box = 1.5, 32
    density = rasterize.rasterize_gaussians(atom, np.array([6.0]), 1.5, voxel, box, center)
    path = tmp_path / "bead.mrc"
    rasterize.write_mrc(path, density, voxel, rasterize.grid_origin_A(center, voxel, box))
    with mrcfile.open(path) as mrc:
        assert mrc.voxel_size.x == pytest.approx(voxel)
        origin = np.array([mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z])
        k, j, i = np.unravel_index(np.argmax(mrc.data), mrc.data.shape)
        peak = origin + voxel * np.array([i, j, k])
    np.testing.assert_allclose(peak, atom[0], atol=voxel / 2 + 1e-6)
