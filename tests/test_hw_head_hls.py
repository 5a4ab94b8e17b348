"""hw/tools/hls.py: the exit head through hls4ml. The PyTorch graph that hls4ml converts equals
the fixed-point head; the compiled C simulation equals it on real tokens and on corner tokens;
and the bad inputs (no g++, an unwritable project folder) are one clear line."""
import shutil

import pytest
import torch

from hw.tools import hls as head_hls
from model.errors import QexitError
from model.exits import exit_path
from model.exits.fixed import token_sums
from sim import head as sim_head


@pytest.fixture(scope="module")
def real(exit_path_files, fmnist_test):
    path, _, im = exit_path_files
    ep = exit_path.load(path)
    return ep, sim_head.exit_tokens(im, ep, fmnist_test.images[:40])


def corner_tokens(t: int, d: int) -> torch.Tensor:
    """All -128, all 127, all zero (zero variance), alternating extremes, one hot."""
    alt = torch.full((t, d), -128)
    alt[:, ::2] = 127
    hot = torch.zeros(t, d, dtype=torch.int64)
    hot[3, 5] = 127
    return torch.stack([torch.full((t, d), -128), torch.full((t, d), 127), torch.zeros(t, d, dtype=torch.int64),
                        alt, alt.flip(1), hot])


def test_the_converted_graph_is_the_fixed_point_head(real):
    ep, tokens = real
    for k in range(len(ep.layers)):
        net = head_hls.HeadNet(ep.head, k, ep.tokens)
        x = torch.cat([tokens[k], corner_tokens(ep.tokens, ep.head.width)])
        scores, gates = ep.head.layer(k, *token_sums(x))
        y = net(x.reshape(len(x), -1).double())
        assert torch.equal(y.long(), torch.cat([scores, gates[:, None]], 1))


@pytest.mark.skipif(shutil.which("g++") is None, reason="hls4ml's C simulation needs g++")
def test_c_simulation_is_bit_exact(real, tmp_path):
    ep, tokens = real
    k = 1
    model = head_hls.build(ep.head, k, ep.tokens, tmp_path / "prj")
    assert (tmp_path / "prj" / "build_prj.tcl").is_file()
    assert (tmp_path / "prj" / "firmware" / "nnet_utils" / "nnet_qexit_head.h").is_file()
    x = torch.cat([tokens[k], corner_tokens(ep.tokens, ep.head.width)])
    res = sim_head.compare_head(ep.layers[k], head_hls.predict(model, x), *ep.head.layer(k, *token_sums(x)))
    assert res.matched == res.total == len(x) * (ep.head.classes + 1), res.first_mismatches
    # the comparison can fail: the same outputs against a head with one bias changed
    ep.head.layers[k].params["b2"][0] += 1000
    try:
        bad = sim_head.compare_head(ep.layers[k], head_hls.predict(model, x), *ep.head.layer(k, *token_sums(x)))
    finally:
        ep.head.layers[k].params["b2"][0] -= 1000
    assert bad.matched < bad.total


def test_missing_gxx_is_one_line(real, tmp_path, monkeypatch):
    ep, _ = real
    monkeypatch.setattr(head_hls.shutil, "which", lambda name: None)
    with pytest.raises(QexitError, match="g\\+\\+ is not installed.*apt-get install g\\+\\+"):
        head_hls.build(ep.head, 0, ep.tokens, tmp_path / "prj")


def test_unwritable_project_folder_is_one_line(real, tmp_path):
    ep, _ = real
    (tmp_path / "file").write_text("")
    with pytest.raises(QexitError, match="cannot write the hls4ml project folder"):
        head_hls.build(ep.head, 0, ep.tokens, tmp_path / "file" / "prj")
