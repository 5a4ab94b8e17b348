"""The exit head's datapath through hls4ml: one HLS project per candidate layer.

Each project is hls4ml's conversion of a PyTorch module (``HeadNet``) that is the fixed-point
head of ``model.exits.fixed.FixedHead`` for one layer, from the engine's int8 tokens to the
comparator's input (the class scores, then the gate's pre-activation). The graph, with the
precision of each output:

| stage | layer | what it computes | output precision |
|---|---|---|---|
| input | `x` | the layer's tokens, T x D, flat | ap_int<8> (T D) |
| 1 | `sums` (extension) | S_i = the sum over the patch tokens, then V (the SAV numerator) | ap_int<48> (D + 1) |
| 2 | `norm` (extension) | the SSA requantized, then the integer LayerNorm | ap_int<8> (D) |
| 3 | `fc1` (hls4ml Dense) | int8 W1, int32 bias, 48-bit accumulator | ap_fixed<32,32,AP_TRN,AP_SAT> (H) |
| 4 | `rq1` (extension) | per-channel requantization (M, shift) | ap_int<8> (H) |
| 5 | `relu` (hls4ml ReLU) | max(h, 0) | ap_int<8> (H) |
| 6 | `fc2` (hls4ml Dense) | int8 W2, int32 bias, 48-bit accumulator | ap_fixed<32,32,AP_TRN,AP_SAT> (E) |
| 7 | `rq2` (extension) | per-channel requantization: the embedding | ap_int<8> (E) |
| 8 | `scores` (hls4ml Dense) | e . t_c, int8 class embeddings, no bias | ap_fixed<32,32,AP_TRN,AP_SAT> (C) |
| 9 | `gate` (extension) | norm, reciprocal, i-exp softmax, top-2, SAV shift, the gate's dot product | ap_int<32> (C + 1: the scores, then the gate) |

hls4ml's own layers run the three dense layers and the ReLU. The rest has no hls4ml layer that
gives the same integers (hls4ml has no sum, its LayerNorm and softmax are table based, and its
table softmax flips the arg-max: hls4ml issues #1512 and #1443), so it runs in four hls4ml
extension layers whose C++ is ``hw/tools/hls_include/nnet_qexit_head.h``: the same integer kernels as
``model.intops``. The Dense accumulators are 48 bits wide and saturate to int32 on output
(``AP_SAT``), as ``intops.gemm`` does. The project folder holds hls4ml's ``build_prj.tcl`` for
Vitis HLS; ``compile()`` builds the C simulation with g++ and ``predict()`` runs it.
"""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hls4ml
import hls4ml.utils.torch
import numpy as np
import torch
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model.layers import Layer
from hls4ml.model.types import IntegerPrecisionType
from torch import nn

from model import intops
from model.errors import QexitError
from model.exits.fixed import FixedHead, token_sums

HEADER = Path(__file__).parent / "hls_include" / "nnet_qexit_head.h"
BACKEND = "Vitis"
PROJECT = "qexit_head"
DENSE_OUT = "ap_fixed<32,32,AP_TRN,AP_SAT>"   # int32, saturated (intops.gemm)
DENSE_ACC = "ap_int<48>"
SUMS_T = "ap_int<48>"


def _i64(x: torch.Tensor) -> torch.Tensor:
    return x.round().to(torch.int64)


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def _hls_module():
    return hls4ml.utils.torch.HLS4MLModule


# --------------------------------------------------------------------------- the PyTorch graph
# Integer values travel as float64 (exact below 2**53); each extension module's forward is the
# FixedHead stage it stands for, so HeadNet(x) equals FixedHead.layer on the same tokens.

def _modules():
    Base = _hls_module()

    class QxTokenSums(Base):
        def __init__(self, tokens: int, width: int):
            super().__init__()
            self.tokens, self.width = tokens, width

        def forward(self, x):
            s, v = token_sums(_i64(x).reshape(-1, self.tokens, self.width))
            return _f64(torch.cat([s, v[:, None]], 1))

    class QxSsaNorm(Base):
        def __init__(self, head: FixedHead, k: int):
            super().__init__()
            self.head, self.k = head, k

        def forward(self, sv):
            return _f64(self.head.ssa_norm(self.k, _i64(sv[:, :-1])))

    class QxRequant(Base):
        def __init__(self, m: torch.Tensor, shift: torch.Tensor):
            super().__init__()
            self.m, self.shift = m, shift

        def forward(self, acc):
            a = _i64(acc).clamp(intops.INT32_MIN, intops.INT32_MAX)
            return _f64(intops.requantize(a, self.m, self.shift))

    class QxGate(Base):
        def __init__(self, head: FixedHead, k: int):
            super().__init__()
            self.head, self.k = head, k

        def forward(self, e, d, sv):
            d = _i64(d).clamp(intops.INT32_MIN, intops.INT32_MAX)
            g = self.head.gate(self.k, _i64(e), d, _i64(sv[:, -1]))
            return _f64(torch.cat([d, g[:, None]], 1))

    return QxTokenSums, QxSsaNorm, QxRequant, QxGate


def _linear(w: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(w.double())
        if b is not None:
            lin.bias.copy_(b.double())
    return lin


class HeadNet(nn.Module):
    """Candidate ``k``'s head as a PyTorch module of int8 tokens (N, T*D) → (N, C + 1):
    the int32 class scores, then the gate's int32 pre-activation."""

    def __init__(self, head: FixedHead, k: int, tokens: int):
        super().__init__()
        QxTokenSums, QxSsaNorm, QxRequant, QxGate = _modules()
        p = head.layers[k].params
        self.tokens, self.width = tokens, head.width
        self.sums = QxTokenSums(tokens, head.width)
        self.norm = QxSsaNorm(head, k)
        self.fc1 = _linear(p["w1"], p["b1"])
        self.rq1 = QxRequant(p["m1"], p["sh1"])
        self.relu = nn.ReLU()
        self.fc2 = _linear(p["w2"], p["b2"])
        self.rq2 = QxRequant(p["m2"], p["sh2"])
        self.scores = _linear(head.class_t, None)
        self.gate = QxGate(head, k)

    def forward(self, x):
        sv = self.sums(x)
        y = self.norm(sv)
        h = self.relu(self.rq1(self.fc1(y)))
        e = self.rq2(self.fc2(h))
        d = self.scores(e)
        return self.gate(e, d, sv)


# --------------------------------------------------------------------------- hls4ml: layers, parsers, templates

def _ll(v) -> str:
    return f"{int(v)}LL"


_REGISTERED: set[str] = set()


def register() -> None:
    """Register the four extension layers with hls4ml's PyTorch frontend and the Vitis backend
    (once per process)."""
    if BACKEND in _REGISTERED:
        return

    include = ["nnet_utils/nnet_qexit_head.h"]

    class QxTokenSumsLayer(Layer):
        def initialize(self):
            self.add_output_variable([self.get_attr("width") + 1])

    class QxSsaNormLayer(Layer):
        def initialize(self):
            self.add_output_variable([self.get_attr("width")])
            self.add_weights_variable("g", "lng{index}", precision=IntegerPrecisionType(17),
                                      data=self.get_attr("g_data"))
            self.add_weights_variable("b", "lnb{index}", precision=IntegerPrecisionType(48),
                                      data=self.get_attr("b_data"))

    class QxRequantLayer(Layer):
        def initialize(self):
            self.add_output_variable([self.get_attr("n")])
            self.add_weights_variable("m", "rqm{index}", precision=IntegerPrecisionType(32, signed=False),
                                      data=self.get_attr("m_data"))
            self.add_weights_variable("sh", "rqs{index}", precision=IntegerPrecisionType(7, signed=False),
                                      data=self.get_attr("sh_data"))

    class QxGateLayer(Layer):
        def initialize(self):
            self.add_output_variable([self.get_attr("classes") + 1])

    def parser(cls_name, attrs):
        def parse(operation, layer_name, input_names, input_shapes, node, class_object, data_reader, config):
            layer = {"class_name": cls_name, "name": layer_name, "inputs": input_names}
            layer.update(attrs(class_object))
            return layer, [input_shapes[0][0], layer.pop("_out")]
        return parse

    def sums_attrs(mod):
        return {"tokens": mod.tokens, "width": mod.width, "_out": mod.width + 1}

    def norm_attrs(mod):
        p = mod.head.layers[mod.k].params
        return {"width": mod.head.width, "m_a": int(p["m_a"]), "sh_a": int(p["sh_a"]), "ln_shift": int(p["ln_shift"]),
                "ln_eps": int(p["ln_eps"]), "g_data": p["ln_g"].numpy(), "b_data": p["ln_b"].numpy(),
                "_out": mod.head.width}

    def requant_attrs(mod):
        n = mod.m.numel()
        return {"n": n, "m_data": mod.m.expand(n).numpy(), "sh_data": mod.shift.expand(n).numpy(), "_out": n}

    def gate_attrs(mod):
        h, p = mod.head, mod.head.layers[mod.k].params
        sm = {k: int(v) for k, v in h.softmax.items()}
        d_min, x_min = intops.exp_floor(sm["pre"], sm["x0"])
        return {"embed": h.embed_dim, "classes": h.classes, "width": h.width, "m_z": int(p["m_z"]),
                "sh_z": int(p["sh_z"]), **{f"sm_{k}": v for k, v in sm.items()}, "d_min": d_min, "x_min": x_min,
                "sav_shift": int(p["sav_shift"]), "w_c": int(p["w_c"]), "w_m": int(p["w_m"]), "w_s": int(p["w_s"]),
                "g_bias": int(p["bias"]), "_out": h.classes + 1}

    configs = {
        QxTokenSumsLayer: lambda n: f"""struct config{n.index} : nnet::qx_token_sums_config {{
    static const unsigned tokens = {n.get_attr('tokens')};
    static const unsigned width = {n.get_attr('width')};
}};\n""",
        QxSsaNormLayer: lambda n: f"""struct config{n.index} : nnet::qx_ssa_norm_config {{
    static const unsigned width = {n.get_attr('width')};
    static const long long m_a = {_ll(n.get_attr('m_a'))};
    static const int sh_a = {n.get_attr('sh_a')};
    static const int shift = {n.get_attr('ln_shift')};
    static const long long eps = {_ll(n.get_attr('ln_eps'))};
    typedef {n.get_attr('g_t').name} g_t;
    typedef {n.get_attr('b_t').name} b_t;
}};\n""",
        QxRequantLayer: lambda n: f"""struct config{n.index} : nnet::qx_requant_config {{
    static const unsigned n = {n.get_attr('n')};
    typedef {n.get_attr('m_t').name} m_t;
    typedef {n.get_attr('sh_t').name} sh_t;
}};\n""",
        QxGateLayer: lambda n: f"""struct config{n.index} : nnet::qx_gate_config {{
    static const unsigned embed = {n.get_attr('embed')};
    static const unsigned classes = {n.get_attr('classes')};
    static const unsigned width = {n.get_attr('width')};
    static const long long m_z = {_ll(n.get_attr('m_z'))};
    static const int sh_z = {n.get_attr('sh_z')};
    static const int pre = {n.get_attr('sm_pre')};
    static const long long x0 = {_ll(n.get_attr('sm_x0'))}, qb = {_ll(n.get_attr('sm_qb'))}, qc = {_ll(n.get_attr('sm_qc'))};
    static const long long d_min = {_ll(n.get_attr('d_min'))}, x_min = {_ll(n.get_attr('x_min'))};
    static const int sav_shift = {n.get_attr('sav_shift')};
    static const long long w_c = {_ll(n.get_attr('w_c'))}, w_m = {_ll(n.get_attr('w_m'))};
    static const long long w_s = {_ll(n.get_attr('w_s'))}, bias = {_ll(n.get_attr('g_bias'))};
}};\n""",
    }

    def call(n, fn, weights=()):
        p = [n.get_input_variable(i) for i in n.inputs]
        out = n.get_output_variable()
        types = ", ".join([v.type.name for v in p] + [out.type.name, f"config{n.index}"])
        args = ", ".join([v.name for v in p] + [out.name] + [n.get_weights(w).name for w in weights])
        return f"nnet::{fn}<{types}>({args});"

    calls = {
        QxTokenSumsLayer: lambda n: call(n, "qx_token_sums"),
        QxSsaNormLayer: lambda n: call(n, "qx_ssa_norm", ("g", "b")),
        QxRequantLayer: lambda n: call(n, "qx_requant", ("m", "sh")),
        QxGateLayer: lambda n: call(n, "qx_gate"),
    }

    backend = hls4ml.backends.get_backend(BACKEND)
    for cls, fmt in configs.items():
        tmpl = type(f"{cls.__name__}Config", (LayerConfigTemplate,),
                    {"__init__": lambda self, c=cls: LayerConfigTemplate.__init__(self, c),
                     "format": lambda self, node, f=fmt: f(node)})
        backend.register_template(tmpl)
    for cls, fmt in calls.items():
        tmpl = type(f"{cls.__name__}Call", (FunctionCallTemplate,),
                    {"__init__": lambda self, c=cls: FunctionCallTemplate.__init__(self, c, include_header=include),
                     "format": lambda self, node, f=fmt: f(node)})
        backend.register_template(tmpl)
    backend.register_source(HEADER)
    for torch_name, cls, attrs in (("QxTokenSums", QxTokenSumsLayer, sums_attrs),
                                   ("QxSsaNorm", QxSsaNormLayer, norm_attrs),
                                   ("QxRequant", QxRequantLayer, requant_attrs),
                                   ("QxGate", QxGateLayer, gate_attrs)):
        hls4ml.model.layers.register_layer(cls.__name__, cls)
        hls4ml.converters.register_pytorch_layer_handler(torch_name, parser(cls.__name__, attrs))
    _REGISTERED.add(BACKEND)


def hls_config(net: HeadNet, trace: bool = False) -> dict:
    """Every precision of the graph (the table in the module docstring)."""
    cfg = hls4ml.utils.config_from_pytorch_model(net, (net.tokens * net.width,), granularity="name", backend=BACKEND,
                                                 default_precision="ap_int<32>")
    names = cfg["LayerName"]

    def prec(name, **kw):
        names.setdefault(name, {})["Precision"] = kw
        names[name]["Trace"] = trace

    prec("x", result="ap_int<8>")
    prec("sums", result=SUMS_T)
    prec("norm", result="ap_int<8>")
    for fc in ("fc1", "fc2", "scores"):
        prec(fc, weight="ap_int<8>", bias="ap_int<32>", accum=DENSE_ACC, result=DENSE_OUT)
    for rq in ("rq1", "rq2", "relu"):
        prec(rq, result="ap_int<8>")
    prec("gate", result="ap_int<32>")
    cfg["Model"]["Strategy"] = "Latency"
    return cfg


def check_gxx() -> None:
    if shutil.which("g++") is None:
        raise QexitError("g++ is not installed, and hls4ml's C simulation needs it: install it with "
                         "`sudo apt-get install g++` (Debian) and rerun")


def build(head: FixedHead, k: int, tokens: int, folder: Path | str, compile: bool = True, trace: bool = False):
    """Convert candidate ``k``'s head into an HLS project in ``folder`` and, with ``compile``,
    write and build it; returns the hls4ml model, whose ``predict`` takes (N, T*D) int8 tokens
    as float64 (``predict`` below)."""

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise QexitError(f"cannot write the hls4ml project folder {folder} ({err.strerror}); "
                         f"choose a writable one with --out") from None
    if compile:
        check_gxx()
    register()
    net = HeadNet(head, k, tokens).eval()
    model = hls4ml.converters.convert_from_pytorch_model(
        net, output_dir=str(folder), project_name=PROJECT, backend=BACKEND, io_type="io_parallel",
        hls_config=hls_config(net, trace))
    if compile:
        model.compile()
    return model


def compile_all(models: list, jobs: int | None = None) -> list[float]:
    """Write and compile hls4ml models, ``jobs`` g++ builds at a time (default: one per CPU);
    returns each one's wall seconds. (hls4ml runs its build script with ``cwd=``, so builds in
    threads do not interfere.)"""

    check_gxx()

    def one(model) -> float:
        t = time.time()
        model.compile()
        return time.time() - t

    jobs = max(1, min(len(models), jobs or os.cpu_count() or 1))
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(one, models))


def predict(model, tokens: torch.Tensor) -> torch.Tensor:
    """Run the compiled C simulation on int8 tokens (N, T, D): (N, C + 1) int64."""
    x = np.ascontiguousarray(tokens.reshape(tokens.shape[0], -1).to(torch.float64).numpy())
    y = np.asarray(model.predict(x), dtype=np.float64).reshape(tokens.shape[0], -1)
    return torch.from_numpy(np.rint(y)).to(torch.int64)
