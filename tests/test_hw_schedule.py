"""hw/cost/schedule.py: the tile schedule, its safety conditions, the cycle model and the peers' formulas."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.cost import schedule
from hw.rtl.timing import ROW_UNIT_LATENCY
from model.errors import QexitError

dims = st.integers(1, 40)
arrays = st.integers(1, 9)


@given(arrays, arrays, dims, st.integers(1, 100), dims)
def test_plan_matches_closed_form(r, c, m, k, n):
    s = schedule.plan(r, c, m, k, n)
    assert s.cycles == schedule.predict_cycles(r, c, m, k, n)
    assert len(s.tiles) == math.ceil(k / r) * math.ceil(n / c)
    assert s.tiles[0].start == r and s.period == max(m, r)


def test_tile_order_is_n_outer_k_inner():
    s = schedule.plan(4, 4, 5, 9, 10)          # KT = 3, NT = 3
    assert [(t.i, t.j) for t in s.tiles] == [(i, j) for j in range(3) for i in range(3)]
    assert [t.first for t in s.tiles[:3]] == [True, False, False]
    assert [t.last for t in s.tiles[:3]] == [False, False, True]
    assert [t.bank for t in s.tiles[:4]] == [0, 1, 0, 1]


sources = st.one_of(st.just(schedule.IDEAL),
                    st.builds(schedule.WeightSource, st.sampled_from([0.3, 1, 2.5, 4, 8, 1000]),
                              st.integers(0, 40)))


@settings(max_examples=200)
@given(arrays, arrays, dims, st.integers(1, 60), st.integers(1, 30), sources)
def test_double_buffer_is_safe_at_every_pe(r, c, m, k, n, source):
    """Replays the RTL timing at each PE: a weight row read at cycle z reaches PE (row, col)
    at the end of cycle z + 1 + col; tile u's activation row mm is read at T_u + mm and is
    used by PE (row, col) at cycle T_u + mm + 1 + row + col. Each bank write must land after
    the last use of the tile that used the bank before and before the first use of its own."""
    s = schedule.plan(r, c, m, k, n, source)
    tiles = s.tiles
    for u, t in enumerate(tiles):
        for row in range(r):
            z = t.loads[row]
            for col in (0, c - 1):
                write = z + 1 + col
                assert write < t.start + 1 + row + col            # before its first use
                if u >= 2:
                    prev = tiles[u - 2]
                    assert write >= prev.start + m + row + col     # after the last use
    # the weight stream delivers one row per cycle, in order: load windows never overlap
    windows = [(t.load_start, t.load_end) for t in tiles]
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))
    assert windows[0][0] == source.available(0, c)
    assert s.cycles >= schedule.ideal_cycles(r, c, m, k, n)


def test_phases_cover_the_run():
    s = schedule.plan(4, 3, 6, 10, 7)
    phases = s.phases()
    assert phases[0] == ("fill", 0, 4)
    name, begin, length = phases[-1]
    assert name == "drain" and begin + length == s.cycles == s.cycles
    streams = [p for p in phases if p[0].startswith("stream")]
    assert all(b[1] - a[1] == s.period for a, b in zip(streams, streams[1:]))
    assert s.drain == 1 + (4 + 3 - 1) + schedule.ROW_UNIT_LATENCY - 1


def test_vit_b32_compute_beats_the_scalesim_v2_formulas_and_reaches_95_percent():
    for m, k, n in ((50, 768, 768), (50, 768, 3072)):
        s = schedule.plan(16, 16, m, k, n)
        assert s.utilization >= 0.95
        assert s.cycles < schedule.scalesim_v2_ws_formula(16, 16, m, k, n)
        assert s.cycles < schedule.scalesim_v2_os_formula(16, 16, m, k, n)


def test_utilization_two_ways_on_the_vit_b32_mlp():
    """50x768x3072 on 16x16: start to done (weight stalls included), and with the activation
    and parameter loads and the unload the engine waits for while idle."""
    s = schedule.plan(16, 16, 50, 768, 3072)
    kt, nt = 768 // 16, 3072 // 16
    # fill, a tile every period, the array's latency, the row unit (requantizer and write)
    assert s.cycles == 16 + (kt * nt - 1) * 50 + 50 + (1 + 31 + ROW_UNIT_LATENCY - 1) == 460_857
    assert s.load_beats == {"a": 50 * kt, "p": nt} and s.weight_beats == kt * nt * 16 == 147_456
    assert s.io_cycles == 2_400 + 50 * nt == 12_000
    macs = 50 * 768 * 3072
    assert s.utilization == macs / (256 * 460_857)
    assert s.utilization_with_io == macs / (256 * (460_857 + 12_000))
    assert round(s.utilization, 4) == 0.9999 and round(s.utilization_with_io, 4) == 0.9745


@pytest.mark.parametrize("bandwidth", [1, 2, 4, 5.12, 8, 16])
def test_weight_stream_stalls_on_the_vit_b32_mlp(bandwidth):
    """256 weight bytes per 50-cycle period: 5.12 B/cycle hides the stream. The stalls follow
    from the stream alone, derived here without the schedule:

    * at or above 5.12 B/cycle only tile 0 waits: its R = 16 rows (C = 16 bytes each) arrive
      from cycle L = 20 on at ``bandwidth`` bytes a cycle, where the ideal fill counts 16 cycles;
    * below it every byte is on the critical path: the last weight byte arrives at
      L + bytes / bandwidth, then the last tile streams its M = 50 tokens and drains
      (1 read + 31 array + ROW_UNIT_LATENCY row unit - 1 cycles)."""
    s = schedule.plan(16, 16, 50, 768, 3072, schedule.WeightSource(bandwidth, 20))
    ideal = 460_857
    weight_bytes = (768 // 16) * (3072 // 16) * 16 * 16
    if bandwidth >= 5.12:
        expected = 20 + 16 * 16 / bandwidth - 16
    else:
        expected = 20 + weight_bytes / bandwidth + 50 + (1 + 31 + ROW_UNIT_LATENCY - 1) - ideal
    assert s.stall_cycles == expected
    assert s.cycles == ideal + expected


def test_weight_source_model_and_bad_values():
    src = schedule.WeightSource(8, 3)
    assert [src.available(w, 16) for w in range(3)] == [3 + 1, 3 + 3, 3 + 5]       # 2 cycles a word
    assert [schedule.WeightSource(32, 0).available(w, 16) for w in range(3)] == [0, 0, 1]
    assert schedule.IDEAL.available(10 ** 6, 16) == 0
    for bad in (0, -1, "8"):
        with pytest.raises(QexitError, match="bandwidth"):
            schedule.WeightSource(bad)
    with pytest.raises(QexitError, match="latency"):
        schedule.WeightSource(8, -1)


def test_scalesim_v2_formulas():
    # docs/architecture.md: OS on 16x16 for 197x192x192 is about 82% utilization
    os_cycles = schedule.scalesim_v2_os_formula(16, 16, 197, 192, 192)
    assert os_cycles == 13 * 12 * (16 + 16 + 192 - 2)
    assert 197 * 192 * 192 / (256 * os_cycles) == pytest.approx(0.82, abs=0.01)
    assert schedule.scalesim_v2_ws_formula(16, 16, 50, 768, 768) == 48 * 48 * (32 + 16 + 50 - 2)


def test_load_and_unload_beats():
    s = schedule.plan(4, 4, 5, 9, 10)
    assert s.load_beats == {"a": 5 * 3, "p": 3} and s.weight_beats == 9 * 4
    assert s.unload_beats == 5 * 3
    assert s.io_cycles == 5 * 3 + 5 * 3          # the longer load stream, then the unload


def test_tile_counts():
    assert schedule.tile_counts(17, 13, 4, 4) == (5, 4)
    assert schedule.tile_counts(16, 16, 16, 16) == (1, 1)


@pytest.mark.parametrize("shape", [(0, 4, 4), (4, 0, 4), (4, 4, 0), (-1, 2, 2), (2, 2 ** 17, 2)])
def test_bad_shapes_are_rejected(shape):
    with pytest.raises(QexitError, match="MxKxN|K ="):
        schedule.plan(4, 4, *shape)


@pytest.mark.parametrize("rc", [(0, 4), (4, 0), (-2, 3)])
def test_bad_array_is_rejected(rc):
    with pytest.raises(QexitError, match=">= 1"):
        schedule.plan(*rc, 4, 4, 4)
