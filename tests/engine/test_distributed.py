"""Two CPU processes (gloo): gradients are synchronised and the result matches one process on the
same global batch."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairexpr.engine.checkpoint import load_tensors

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FAIREXPR_CACHE", str(cache))
    env = dict(os.environ, FAIREXPR_CACHE=str(cache), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    port = _free_port()
    out = tmp_path / "ddp"
    procs = [subprocess.Popen([sys.executable, str(HERE / "_ddp_worker.py"), str(r), "2", str(port), str(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    logs = [p.communicate(timeout=300)[0].decode() for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    r0, r1 = load_tensors(out / "rank0.safetensors"), load_tensors(out / "rank1.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"rank weights diverged at {k}: gradients were not synchronised"
    sys.path.insert(0, str(HERE))
    import _ddp_worker

    torch.set_num_threads(1)
    _ddp_worker.run(1, str(tmp_path / "single"))
    single = load_tensors(tmp_path / "single" / "rank0.safetensors")
    for k in r0:
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=1e-5, msg=f"DDP result differs from one process at {k}")
