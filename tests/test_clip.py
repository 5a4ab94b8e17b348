"""model/clip.py: a tiny random HF CLIPModel saved offline, mapped onto qexit's FP32 ViT."""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hw.program import make_plan
from model.clip import CLIP_MEAN, CLIP_STD, TEMPLATES, clip_preprocess, load_clip
from model.errors import QexitError
from model.golden import Golden
from model.quantize import load_intmodel, quantize
from qexit.cli import main

CLASSES = ["cat", "dog", "traffic light"]


def _byte_symbols():
    """GPT-2/CLIP's byte-to-unicode table: the 256 symbols of byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _write_tokenizer(folder):
    """A CLIP byte-level BPE tokenizer with no merges: every byte is a token (514 in all)."""
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def _save_clip(folder, width, layers, heads, patch, image, act, eps=1e-5, seed=0):
    """A random CLIPModel (every parameter perturbed, LayerNorms included) saved with its tokenizer."""
    transformers = pytest.importorskip("transformers")
    folder.mkdir(parents=True)
    vocab = _write_tokenizer(folder)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab - 2,
                         eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                           num_attention_heads=heads, patch_size=patch, image_size=image, hidden_act=act,
                           layer_norm_eps=eps),
        projection_dim=24)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(folder)
    transformers.CLIPTokenizer.from_pretrained(folder).save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def clip_folders(tmp_path_factory):
    """Two checkpoints: the issue's shape (quick_gelu) and another one nothing was tuned for (gelu)."""
    root = tmp_path_factory.mktemp("clip")
    a = _save_clip(root / "a", width=64, layers=4, heads=4, patch=8, image=32, act="quick_gelu")
    b = _save_clip(root / "b", width=48, layers=3, heads=2, patch=16, image=48, act="gelu", eps=1e-3, seed=1)
    return {"a": (root / "a", a), "b": (root / "b", b)}


def _tensor(out):
    """get_*_features: a tensor in transformers 4, an output with pooler_output in transformers 5."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@pytest.mark.parametrize("name", ["a", "b"])
def test_image_features_match_hf(clip_folders, name):
    folder, hf = clip_folders[name]
    vit, _, _ = load_clip(folder, CLASSES)
    vc = hf.config.vision_config
    assert (vit.cfg.width, vit.cfg.depth, vit.cfg.patch, vit.cfg.image_size) == (
        vc.hidden_size, vc.num_hidden_layers, vc.patch_size, vc.image_size)
    assert vit.cfg.pre_ln and vit.cfg.act == vc.hidden_act and vit.cfg.ln_eps == vc.layer_norm_eps
    pixels = torch.randn(3, 3, vc.image_size, vc.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = _tensor(hf.get_image_features(pixel_values=pixels))
        ours = vit.encode_image(pixels)
    assert ours.shape == ref.shape == (3, 24)
    assert (ours - ref).abs().max().item() <= 1e-5
    assert ref.abs().max().item() > 0.1  # the features are not trivially small
    assert vit.logit_scale.item() == hf.logit_scale.item()


def test_class_embeddings_are_the_prompt_ensemble(clip_folders):
    folder, hf = clip_folders["a"]
    transformers = pytest.importorskip("transformers")
    vit, emb, _ = load_clip(folder, CLASSES)
    assert emb.shape == (len(CLASSES), 24)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(CLASSES)), atol=1e-6)
    assert torch.equal(emb, vit.class_embeddings)
    tok = transformers.CLIPTokenizer.from_pretrained(folder)
    rows = []
    with torch.no_grad():
        for c in CLASSES:
            t = tok([p.format(c) for p in TEMPLATES], padding=True, return_tensors="pt")
            e = F.normalize(_tensor(hf.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"])), dim=-1)
            rows.append(F.normalize(e.mean(0), dim=0))
    assert (emb - torch.stack(rows)).abs().max().item() <= 1e-6
    assert len(TEMPLATES) == 5


@pytest.mark.parametrize("size_wh", [(40, 60), (47, 40), (32, 32)])
def test_preprocess_is_clips(size_wh):
    rng = np.random.default_rng(0)
    w, h = size_wh
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    # by hand: short side to 32 (bicubic), centre crop 32, /255, CLIP's mean and std
    nw, nh = (32, int(32 * h / w)) if w <= h else (int(32 * w / h), 32)
    arr = np.asarray(img.resize((nw, nh), Image.BICUBIC), dtype=np.float64) / 255.0
    top, left = (nh - 32) // 2, (nw - 32) // 2
    ref = (arr[top:top + 32, left:left + 32] - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    out = clip_preprocess(img, 32)
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    assert np.abs(out.permute(1, 2, 0).numpy() - ref).max() <= 1e-5
    gray = clip_preprocess(img.convert("L"), 32)  # any mode becomes RGB
    assert gray.shape == (3, 32, 32)


def test_preprocess_equals_hf_image_processor():
    """HF's own CLIP image processor (its PIL backend: no torchvision) gives the same pixels."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "CLIPImageProcessorPil"):
        pytest.skip("this transformers has no PIL-backed CLIP image processor")
    proc = transformers.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    rng = np.random.default_rng(1)
    for w, h in [(40, 60), (47, 40), (201, 77)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ref = torch.as_tensor(np.asarray(proc(images=img, return_tensors="np")["pixel_values"]))[0]
        assert (clip_preprocess(img, 32) - ref).abs().max().item() <= 1e-6


def _open_clip_state_dict(hf):
    """The HF fixture's weights under open_clip's names, written by hand from open_clip's
    model.py and transformer.py (VisionTransformer, TextTransformer, ResidualAttentionBlock with
    nn.MultiheadAttention): q, k, v stacked in ``in_proj``; ``proj`` and ``text_projection`` are
    (width, embed) matrices used as ``x @ proj``; the text tower's keys sit at the top level."""
    w = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    sd = {"visual.conv1.weight": w["vision_model.embeddings.patch_embedding.weight"],
          "visual.class_embedding": w["vision_model.embeddings.class_embedding"],
          "visual.positional_embedding": w["vision_model.embeddings.position_embedding.weight"],
          "visual.proj": w["visual_projection.weight"].T.contiguous(),
          "token_embedding.weight": w["text_model.embeddings.token_embedding.weight"],
          "positional_embedding": w["text_model.embeddings.position_embedding.weight"],
          "text_projection": w["text_projection.weight"].T.contiguous(),
          "logit_scale": w["logit_scale"],
          "attn_mask": torch.full((77, 77), float("-inf")).triu(1)}
    for theirs, ours in (("visual.ln_pre", "vision_model.pre_layrnorm"), ("visual.ln_post", "vision_model.post_layernorm"),
                         ("ln_final", "text_model.final_layer_norm")):
        for p in ("weight", "bias"):
            sd[f"{theirs}.{p}"] = w[f"{ours}.{p}"]
    for prefix, tower, cfg in (("visual.", "vision_model", hf.config.vision_config), ("", "text_model", hf.config.text_config)):
        for i in range(cfg.num_hidden_layers):
            a, b = f"{prefix}transformer.resblocks.{i}.", f"{tower}.encoder.layers.{i}."
            for p in ("weight", "bias"):
                sd[f"{a}attn.in_proj_{p}"] = torch.cat([w[f"{b}self_attn.{n}_proj.{p}"] for n in "qkv"])
                for theirs, ours in (("ln_1", "layer_norm1"), ("attn.out_proj", "self_attn.out_proj"),
                                     ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                    sd[f"{a}{theirs}.{p}"] = w[f"{b}{ours}.{p}"]
    return sd


def _save_open_clip(hf, hf_folder, folder, safetensors=True, prefix=""):
    """An open_clip hub-style folder: open_clip_config.json, the weights, the tokenizer files."""
    folder.mkdir(parents=True)
    vc, tc = hf.config.vision_config, hf.config.text_config
    model_cfg = {"embed_dim": hf.config.projection_dim, "quick_gelu": vc.hidden_act == "quick_gelu",
                 "vision_cfg": {"image_size": vc.image_size, "layers": vc.num_hidden_layers, "width": vc.hidden_size,
                                "patch_size": vc.patch_size, "head_width": vc.hidden_size // vc.num_attention_heads,
                                "norm_kwargs": {"eps": vc.layer_norm_eps}},
                 "text_cfg": {"context_length": 77, "vocab_size": tc.vocab_size, "width": tc.hidden_size,
                              "heads": tc.num_attention_heads, "layers": tc.num_hidden_layers}}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {
        "mean": list(CLIP_MEAN), "std": list(CLIP_STD)}}))
    sd = {prefix + k: v for k, v in _open_clip_state_dict(hf).items()}
    if safetensors:
        from safetensors.torch import save_file
        save_file(sd, folder / "open_clip_model.safetensors")
    else:
        torch.save({"state_dict": sd}, folder / "open_clip_pytorch_model.bin")
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((hf_folder / name).read_bytes())
    return folder


@pytest.mark.parametrize("name,safetensors,prefix", [("a", True, ""), ("b", False, "module.")])
def test_open_clip_checkpoint_matches_hf(clip_folders, tmp_path, name, safetensors, prefix):
    """An open_clip folder of the same weights gives HF's image features and the HF folder's
    class embeddings (quick_gelu from open_clip_config.json, eps from norm_kwargs)."""
    hf_folder, hf = clip_folders[name]
    folder = _save_open_clip(hf, hf_folder, tmp_path / "oc", safetensors, prefix)
    vit, emb, _ = load_clip(folder, CLASSES)
    vc = hf.config.vision_config
    assert (vit.cfg.width, vit.cfg.depth, vit.cfg.heads, vit.cfg.patch, vit.cfg.image_size, vit.cfg.act,
            vit.cfg.ln_eps) == (vc.hidden_size, vc.num_hidden_layers, vc.num_attention_heads, vc.patch_size,
                                vc.image_size, vc.hidden_act, vc.layer_norm_eps)
    pixels = torch.randn(3, 3, vc.image_size, vc.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = _tensor(hf.get_image_features(pixel_values=pixels))
        ours = vit.encode_image(pixels)
    assert (ours - ref).abs().max().item() <= 1e-5 and ref.abs().max().item() > 0.1
    if hf.config.text_config.hidden_act == vc.hidden_act:  # open_clip uses one activation in both towers
        _, hf_emb, _ = load_clip(hf_folder, CLASSES)
        assert (emb - hf_emb).abs().max().item() <= 1e-6
    assert vit.logit_scale.item() == hf.logit_scale.item()


def test_bad_open_clip_folder(clip_folders, tmp_path):
    hf_folder, hf = clip_folders["a"]
    folder = _save_open_clip(hf, hf_folder, tmp_path / "oc")
    weights = folder / "open_clip_model.safetensors"
    good = weights.read_bytes()
    weights.unlink()
    with pytest.raises(QexitError) as e:
        load_clip(folder, CLASSES)
    _one_line(e, "no weights")
    weights.write_bytes(good[:500])
    with pytest.raises(QexitError) as e:
        load_clip(folder, CLASSES)
    _one_line(e, "cannot load the CLIP checkpoint")
    from safetensors.torch import save_file
    sd = _open_clip_state_dict(hf)
    save_file({k: v for k, v in sd.items() if k != "visual.proj"}, weights)       # attention-pool variants lack it
    with pytest.raises(QexitError) as e:
        load_clip(folder, CLASSES)
    _one_line(e, "not an open_clip CLIP ViT state dict (no visual.proj)")
    save_file({k: v for k, v in sd.items() if "resblocks.1.mlp" not in k}, weights)
    with pytest.raises(QexitError) as e:
        load_clip(folder, CLASSES)
    _one_line(e, "does not fit a standard open_clip CLIP ViT")
    save_file(sd, weights)
    (folder / "vocab.json").unlink()
    with pytest.raises(QexitError) as e:
        load_clip(folder, CLASSES)
    _one_line(e, "has no CLIP tokenizer")


def _one_line(excinfo, text):
    msg = str(excinfo.value)
    assert text in msg and "\n" not in msg
    assert excinfo.value.__suppress_context__ or excinfo.value.__context__ is None


def test_not_a_clip_folder(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, CLASSES)
    _one_line(e, "is not a Hugging Face CLIP checkpoint")
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path / "nope", CLASSES)
    _one_line(e, "does not exist")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, CLASSES)
    _one_line(e, "not CLIP")


def test_text_tower_without_vision_tower(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2)
    transformers.CLIPTextModel(cfg).save_pretrained(tmp_path)
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, CLASSES)
    _one_line(e, "text tower but no vision tower")


def test_checkpoint_without_tokenizer_or_weights(clip_folders, tmp_path):
    folder, _ = clip_folders["a"]
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, CLASSES)
    _one_line(e, "has no CLIP tokenizer")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, CLASSES)
    _one_line(e, "cannot load the CLIP checkpoint")
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, CLASSES)
    _one_line(e, "cannot load the CLIP checkpoint")


@pytest.mark.parametrize("names", [None, [], "cat", ["cat", ""], ["cat", 3]])
def test_bad_class_names(tmp_path, names):
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, names)
    _one_line(e, "class name")


def test_transformers_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(QexitError) as e:
        load_clip(tmp_path, CLASSES)
    _one_line(e, "pip install -e .[clip]")


@pytest.mark.parametrize("name", ["a", "b"])
def test_clip_tower_quantizes_to_the_integer_only_model(clip_folders, name, tmp_path):
    """The CLIP layout through the integer path: per-channel pixel statistics folded into the
    patch embedding, the pre-LN as an integer LayerNorm, quick_gelu as a 256-entry table. The
    golden model's int8 embeddings point where the FP32 tower's do."""

    folder, _ = clip_folders[name]
    vit, _, _ = load_clip(folder, CLASSES)
    cfg = vit.cfg
    images = torch.randint(0, 256, (96, 3, cfg.image_size, cfg.image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    im = quantize(vit, images[:64])
    im.save(tmp_path / "im.pt")
    im = load_intmodel(tmp_path / "im.pt", cfg)            # validated on load
    assert "pre.ln.g" in im.params and ("b0.gelu.table" in im.params) == (cfg.act == "quick_gelu")
    out = Golden(im).forward(images[64:])
    with torch.no_grad():
        ref = vit.encode_image(vit.normalized(images[64:])).double()
    cos = F.cosine_similarity(out.embedding.double() * im.scales["emb"], ref, dim=-1)
    assert cos.min() > 0.9, cos
    print(f"{name}: cosine int8 vs FP32 embedding, min {cos.min():.4f}, mean {cos.mean():.4f}")
    assert make_plan(cfg, 8).tokens == cfg.tokens        # the layer engine takes this layout too


def test_the_flow_takes_a_clip_folder(clip_folders, tmp_path, monkeypatch):
    """`qexit report --model clip:DIR --data DIR`: eval, quantize and exits on the CLIP folder
    (class names from test/'s folders, images cropped as CLIP crops them), then cost on the
    layer engine; each writes its usual summary, and index.md lists only this run's steps."""

    folder, _ = clip_folders["a"]
    g = np.random.default_rng(0)
    for split, n in (("train", 12), ("gate", 12), ("test", 4)):
        for c in CLASSES:
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = g.integers(0, 256, (40 + i, 36, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / c / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    model = ["--model", f"clip:{folder}", "--data", str(tmp_path / "data")]
    assert main(["eval", "--model", f"clip:{folder}"]) == 2           # no --data: one line
    (tmp_path / "reports" / "verify-gemm").mkdir(parents=True)        # a stale step of another run
    (tmp_path / "reports" / "verify-gemm" / "summary.json").write_text('{"matched": 1, "total": 1}')
    assert main(["report", *model]) == 0                               # eval, quantize, exits, cost
    s = json.loads((tmp_path / "reports" / "eval" / "summary.json").read_text())
    assert s["images"] == 12 and s["checkpoint"] == f"clip:{folder}"
    q = json.loads((tmp_path / "reports" / "quantize" / "summary.json").read_text())
    assert q["images"] == 12 and q["calib_images"] == 36 and len(q["nsr_per_layer"]) == 4
    e = json.loads((tmp_path / "reports" / "exits" / "summary.json").read_text())
    assert e["checkpoint"] == f"clip:{folder}" and len(e["exit_distribution"]) == 4
    assert (tmp_path / "reports" / "exits" / "exit_path.pt").is_file()
    c = json.loads((tmp_path / "reports" / "cost" / "summary.json").read_text())   # pre-LN step, table unit
    assert c["cycles_full"] > c["cycles_exit"] > 0 and c["energy_full_pj"] > 0
    index = (tmp_path / "reports" / "index.md").read_text()
    other, _ = clip_folders["b"]                                         # an IntModel of another model
    assert main(["cost", "--model", f"clip:{other}", "--data", str(tmp_path / "data")]) == 2
    assert f"clip:{folder}" in index and "[exits]" in index and "[cost]" in index and "verify-gemm" not in index
