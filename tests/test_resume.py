"""Training survives SIGKILL: a rerun resumes from the last checkpoint and ends where an uninterrupted run ends."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import train_settings

ROOT = Path(__file__).resolve().parents[1]

# tests/ddp_worker.py on one rank; 4 channels on one thread: channels-last would abort that process on AVX2-only
# CPUs (models.memory_format)
WORKER = str(ROOT / "tests" / "ddp_worker.py")


def run(out, checkpoint, fingerprint="a", wait=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    settings = train_settings(
        steps=240, batch_size=32, learning_rate=2e-3, validation_size=64, validate_every=20, checkpoint_every=40, seed=3
    )
    settings = json.dumps(dataclasses.asdict(settings))
    cmd = [sys.executable, WORKER, "train", str(out), str(checkpoint), settings, fingerprint, "4"]
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=True)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_training_resumes_and_matches_an_uninterrupted_run(tmp_path):
    reference = run(tmp_path / "ref.pt", "")
    checkpoint = tmp_path / "ckpt" / "train.pt"
    proc = run(tmp_path / "killed.pt", checkpoint, wait=False)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    saved = torch.load(checkpoint, weights_only=True)
    assert 40 <= saved["step"] < 240
    assert not (tmp_path / "killed.pt").exists()

    resumed = run(tmp_path / "resumed.pt", checkpoint)
    assert f"resuming from checkpoint {checkpoint} at step {saved['step'] + 1}" in resumed.stderr
    assert json.loads(resumed.stdout) == pytest.approx(json.loads(reference.stdout), rel=1e-6)
    a, b = torch.load(tmp_path / "ref.pt"), torch.load(tmp_path / "resumed.pt")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_checkpoint_from_another_configuration_starts_fresh(tmp_path):
    checkpoint = tmp_path / "train.pt"
    run(tmp_path / "first.pt", checkpoint, fingerprint="config-1")
    assert torch.load(checkpoint, weights_only=True)["step"] == 200
    second = run(tmp_path / "second.pt", checkpoint, fingerprint="config-2")
    assert "another configuration; starting from step 0" in second.stderr
    assert "resuming" not in second.stderr
