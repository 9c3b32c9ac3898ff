"""Training on several processes (torchrun, gloo on CPU): each global batch is split between the processes
and their gradients are averaged before every optimiser step, so two processes train the model one process
trains with the same global batch; rank 0 alone writes the run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from latentforge.cli import main
from latentforge.io import load_tensors

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TRAIN = ["train", "ae", "--data", "digits", "--epochs", "2", "--batch-size", "64", "--eval-k", "0", "--latent-dim", "4",
         "--hidden", "32", "--arch", "mlp"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_tensors(run / "model.safetensors")


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert worst < atol, worst


def test_two_processes_train_what_one_process_trains(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert main([*TRAIN, "--out", str(one)]) == 0
    out = subprocess.run([sys.executable, "-m", "latentforge.cli", *TRAIN, "--out", str(two), "--nproc", "2"],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    _close(_weights(one), _weights(two), atol=2e-4)  # the same updates, summed in another order
    assert out.stdout.count("run directory:") == 1  # rank 0 alone reports
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(".")) == []  # no stray temporary files
    # and the run resumes on one process
    assert main(["train", "--resume", "--out", str(two), "--epochs", "3", "--eval-k", "0"]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_rendezvous_on_localhost(tmp_path: Path) -> None:
    """Two torchrun "nodes" on this machine (--nnodes 2, a node rank each, rendezvous on 127.0.0.1)."""
    port, run = _free_port(), tmp_path / "run"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={r}",
                               "--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}",
                               "-m", "latentforge.cli", *TRAIN, "--out", str(run)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for r in (0, 1)]
    outs = [p.communicate(timeout=600) for p in nodes]
    assert all(p.returncode == 0 for p in nodes), [o[1][-1500:] for o in outs]
    assert (run / "report.html").exists() and (run / "checkpoint").is_dir()
    one = tmp_path / "one"
    assert main([*TRAIN, "--out", str(one)]) == 0
    _close(_weights(one), _weights(run), atol=2e-4)
