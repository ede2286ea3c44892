import gzip
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from cryoflow.errors import InputError
from cryoflow.io import structure, structure_text


def test_pdb_and_mmcif_agree(root, data_dir):
    pdb = structure.select_atoms(structure.load_structure(root / "resources/structures/4ake.pdb"), ["A"], "CA")
    cif = structure.select_atoms(structure.load_structure(data_dir / "4ake.cif"), ["A"], "CA")
    assert pdb.numAtoms() == cif.numAtoms() == 214
    np.testing.assert_allclose(pdb.getCoords(), cif.getCoords(), atol=1e-3)


def test_selection_drops_water_and_other_chains(adk_ca, root):
    atoms = structure.load_structure(root / "resources/structures/4ake.pdb")
    heavy = structure.select_atoms(atoms, ["A"], "heavy")
    assert set(heavy.getChids()) == {"A"}
    assert "HOH" not in set(heavy.getResnames())
    assert set(adk_ca.getNames()) == {"CA"}
    both = structure.select_atoms(atoms, ["A", "B"], "CA")
    assert both.numAtoms() == 428


def test_empty_selection_names_the_chains_that_would_do(root, tmp_path):
    atoms = structure.load_structure(root / "resources/structures/4ake.pdb")
    with pytest.raises(InputError, match=r"chains \['Z'\] hold no protein CA atoms.*CA atoms: \['A', 'B'\]"):
        structure.select_atoms(atoms, ["Z"], "CA")
    # a chain that is there but holds no protein (a ligand's): named as present, not as one that would do
    ligand = "HETATM    1  C1  LIG L   1       1.000   2.000   3.000  1.00  0.00           C\n"
    lines = (root / "resources/structures/4ake.pdb").read_text().splitlines(keepends=True)
    (tmp_path / "with_ligand.pdb").write_text("".join(lines[:2]) + ligand + "".join(lines[2:]))
    atoms = structure.load_structure(tmp_path / "with_ligand.pdb")
    with pytest.raises(InputError, match=r"CA atoms: \['A', 'B'\] \(chains present: \['A', 'B', 'L'\]\)"):
        structure.select_atoms(atoms, ["L"], "CA")


def test_bead_weights_are_electron_counts(adk_ca, root):
    weights = structure.bead_weights(adk_ca, "CA")
    # glycine in a chain is C2H3NO: 2*6 + 3*1 + 7 + 8 = 30 electrons; methionine C5H9NOS: 70
    assert structure.RESIDUE_ELECTRONS["GLY"] == 30
    assert weights[0] == 70 and adk_ca.getResnames()[0] == "MET"
    heavy = structure.select_atoms(structure.load_structure(root / "resources/structures/4ake.pdb"), ["A"], "heavy")
    atom_weights = structure.bead_weights(heavy, "heavy")
    assert set(np.unique(atom_weights)) <= {6, 7, 8, 16}
    # CA beads carry the hydrogens too, so they weigh more than the heavy atoms alone
    assert weights.sum() > atom_weights.sum()


def test_missing_and_unparseable_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        structure.load_structure(tmp_path / "nope.pdb")
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not mmCIF\n")
    with pytest.raises(InputError, match="bad.cif"):
        structure.load_structure(bad)
    with pytest.raises(InputError, match="must end in"):
        structure.load_structure(Path(__file__))


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    requests: list = []

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def rcsb_server(data_dir):
    _Handler.files = {
        "/4AKE.cif.gz": gzip.compress((data_dir / "4ake.cif").read_bytes()),
        "/9BAD.cif.gz": gzip.compress(b"<html>not a structure</html>"),
    }
    _Handler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_parses_and_caches(rcsb_server, tmp_path):
    path = structure.fetch_structure("4ake", tmp_path / "cache", "cif", rcsb_server)
    assert path == tmp_path / "cache" / "4ake.cif"
    assert structure.select_atoms(structure.load_structure(path), ["A"], "CA").numAtoms() == 214
    again = structure.fetch_structure("4AKE", tmp_path / "cache", "cif", rcsb_server)
    assert again == path and _Handler.requests == ["/4AKE.cif.gz"]  # the second call used the cache


def test_fetch_errors_are_clear_and_leave_no_cache_entry(rcsb_server, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(InputError, match="'1XYZ'.*not found"):
        structure.fetch_structure("1xyz", cache, "cif", rcsb_server)
    with pytest.raises(InputError, match="does not parse"):
        structure.fetch_structure("9bad", cache, "cif", rcsb_server)
    assert not cache.exists() or list(cache.iterdir()) == []


def test_fetch_offline_error(tmp_path):
    with pytest.raises(InputError, match="could not reach.*offline"):
        structure.fetch_structure("4ake", tmp_path, "cif", "http://127.0.0.1:9", timeout_s=2)


def test_pdb_id_detection(tmp_path):
    assert structure_text.is_pdb_id("4AKE") and structure_text.is_pdb_id("1ake")
    assert not structure_text.is_pdb_id("resources/structures/4ake.pdb")
    assert not structure_text.is_pdb_id("ABCD")
