"""model/exits/exit_path.py: the exit path file `qexit exits` hands to the hardware steps, its
checks, and the threshold registers of model/exits/fixed.py."""
import pytest
import torch

from model import intops
from model.errors import QexitError
from model.exits import exit_path, fixed


def test_round_trip(exit_path_files, tmp_path):
    path, _, _ = exit_path_files
    ep = exit_path.load(path)
    exit_path.save(tmp_path / "again.pt", ep)
    again = exit_path.load(tmp_path / "again.pt")
    assert again.layers == ep.layers == [1, 3] and again.registers == ep.registers
    s = torch.randint(-3000, 3000, (20, ep.head.width))
    v = torch.randint(0, 2 ** 30, (20,))
    for k in range(2):
        for a, b in zip(again.head.layer(k, s, v), ep.head.layer(k, s, v)):
            assert torch.equal(a, b)
    assert torch.equal(again.test_scores, ep.test_scores) and again.test_scores.dtype == torch.int64




@pytest.mark.parametrize("change,words", [
    ({"layers": [1, 4]}, "do not exist in a 4-layer model"),
    ({"layers": [0, 3]}, "do not exist"),
    ({"registers": [5]}, "threshold registers for 2 exit layers"),
    ({"registers": [5, 2 ** 40]}, "does not fit int32"),
    ({"format": 99}, "not a readable exit path"),
])
def test_bad_exit_paths_are_one_line(exit_path_files, tmp_path, change, words):
    path, _, _ = exit_path_files
    blob = torch.load(path, weights_only=True)
    blob.update(change)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(QexitError, match=words) as err:
        exit_path.load(tmp_path / "bad.pt")
    assert "\n" not in str(err.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(QexitError, match="qexit exits"):
        exit_path.load(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(QexitError, match="not a readable exit path"):
        exit_path.load(tmp_path / "junk.pt")


def test_a_head_from_another_width_is_refused(exit_path_files, tmp_path):
    path, _, _ = exit_path_files
    ep = exit_path.load(path)
    with pytest.raises(QexitError, match="width 16 but the IntModel has width 64"):
        ep.check_width(64)
    blob = torch.load(path, weights_only=True)
    blob["head"]["layers"][1]["w1"] = torch.zeros(32, 8, dtype=torch.int64)
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(QexitError, match="another model width"):
        exit_path.load(tmp_path / "bad.pt")


def test_threshold_registers_equal_the_sigmoid_test():
    """σ(g / 2**24) >= τ  ⇔  g >= register, on gates at and around every register."""
    taus = torch.tensor([0.0, 0.05, 0.5, 0.77, 0.9, 0.99])
    regs = fixed.thresholds(taus)
    assert regs[0] == intops.INT32_MIN and (regs[1:] > regs[:-1]).all()
    for tau, reg in zip(taus[1:].tolist(), regs[1:].tolist()):
        g = torch.arange(reg - 3, reg + 4, dtype=torch.float64)
        assert ((torch.sigmoid(g / 2 ** fixed.GATE_BITS) >= tau) == (g >= reg)).all()
