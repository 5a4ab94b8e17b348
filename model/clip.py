"""A local Hugging Face CLIP checkpoint as qexit's FP32 ViT, exactly.

``load_clip(folder, class_names) -> (vit, class_embeddings, preprocess)`` reads a folder saved
with ``CLIPModel.save_pretrained`` plus its tokenizer (``CLIPProcessor.save_pretrained``), offline
(``local_files_only=True``). ``transformers`` is the optional extra ``pip install -e .[clip]``.

The vision tower maps onto ``model.vit.CLIPViT`` weight for weight, so ``vit.encode_image(pixels)``
equals HF's ``CLIPModel.get_image_features(pixel_values=pixels)`` (tests/test_clip.py checks ≤ 1e-5):

- patch embedding: HF's Conv2d(3, width, patch, stride=patch, bias=False) weight (o, c, ph, pw)
  is permuted to patchify's (ph, pw, c) order for qexit's Linear, with a zero bias;
- [CLS] (``class_embedding``) and the position embeddings; ``pre_layrnorm`` is qexit's
  ``ln_pre`` (``pre_ln=True``);
- per block: ``layer_norm1/2`` → ``ln1/2``; q, k, v projections concatenated in that order into
  ``qkv``; ``out_proj`` → ``proj``; ``mlp.fc1/fc2`` → ``fc1/fc2`` with ``hidden_act``
  (``quick_gelu`` or ``gelu``) as ``act``;
- ``post_layernorm`` on [CLS] → ``ln_post``; ``visual_projection`` (no bias) → ``proj``;
  ``layer_norm_eps`` → ``ln_eps``; ``logit_scale`` as it is (both store its log).

An open_clip checkpoint works too: a folder with ``open_clip_config.json`` (its ``model_cfg``
says ``quick_gelu``; a state dict does not record its activation), the weights as
``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin`` with open_clip's names
(``visual.conv1``, ``visual.transformer.resblocks.{i}.attn.in_proj_weight``, ``visual.proj``,
``token_embedding``, ``text_projection`` ...; OpenAI's original names are the same) and the CLIP
tokenizer files. ``open_clip_model`` maps it onto an HF ``CLIPModel`` (in_proj split into q, k, v;
``visual.proj`` and ``text_projection`` transposed; text pooling at the highest token id, as
open_clip's argmax), so everything after is the same code. The open_clip package itself is not
used: it imports torchvision, which does not import beside the CPU torch pinned here. A folder with
both an HF ``config.json`` and open_clip files (as the laion hub folders are) is read as HF.

Class embeddings come from the CLIP text tower (``get_text_features``, FP32) with a 5-template
prompt ensemble: per class, each template's embedding is L2-normalised, the five are averaged and
the mean is normalised again. The paper (LRA-EE, §5.1) names a 5-template ensemble but lists only
two examples ("a photo of a {}", "a clear photo of a {}"), so ``TEMPLATES`` below is the
project's choice.

``preprocess`` is CLIP's: RGB, the short side resized to the model's image size (bicubic),
centre crop, /255, CLIP's per-channel mean and std. PIL and torch only (no torchvision).
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from model.errors import QexitError
from model.vit import ACTIVATIONS, CLIPViT, ViTConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
)
SAVE_HINT = ("pass a folder saved with CLIPModel.save_pretrained and CLIPProcessor.save_pretrained, "
             "or an open_clip folder (open_clip_config.json, its weights and the tokenizer files)")
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def clip_crop(image, size: int) -> torch.Tensor:
    """PIL image → uint8 pixels (3, size, size) as CLIP crops them: RGB, the short side resized to
    ``size`` (bicubic), the centre cropped. What the whole flow reads (``load_image_folder``'s
    ``preprocess``): the model normalises inside, with CLIP's statistics in its config."""

    image = image.convert("RGB")
    w, h = image.size
    if w <= h:
        w, h = size, int(size * h / w)
    else:
        w, h = int(size * w / h), size
    image = image.resize((w, h), Image.BICUBIC)
    top, left = (h - size) // 2, (w - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def clip_preprocess(image, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """PIL image → CLIP's float pixels (3, size, size), as HF's CLIPImageProcessor: ``clip_crop``,
    /255, the per-channel mean and std (CLIP's unless the checkpoint says otherwise)."""
    x = clip_crop(image, size).float() / 255.0
    return (x - torch.tensor(mean).reshape(3, 1, 1)) / torch.tensor(std).reshape(3, 1, 1)


def load_clip(folder: Path | str, class_names) -> tuple[CLIPViT, torch.Tensor, Callable]:
    """(qexit FP32 ViT in eval mode, class embeddings (classes, projection_dim), preprocess)."""
    names = list(class_names) if isinstance(class_names, (list, tuple)) else []
    if not names:
        raise QexitError(f"class names are missing or not a list (got {type(class_names).__name__} {class_names!r:.40}); "
                         "pass a non-empty list, one name per class in label order")
    bad = next((i for i, n in enumerate(names) if not (isinstance(n, str) and n.strip())), None)
    if bad is not None:
        raise QexitError(f"class name {bad} ({names[bad]!r}) is empty or not text; pass one name per class")
    try:
        from transformers import CLIPModel, CLIPTokenizer  # lazy: the optional clip extra
    except ImportError:
        raise QexitError("loading a CLIP checkpoint needs transformers; install it with "
                         "`pip install -e .[clip]`") from None
    folder = Path(folder)
    mean, std = CLIP_MEAN, CLIP_STD
    if (folder / OPEN_CLIP_CONFIG).is_file() and not (folder / "config.json").is_file():
        model, mean, std = open_clip_model(folder)
        _check_tokenizer(folder)
        tokenizer = _load(lambda: CLIPTokenizer.from_pretrained(folder, local_files_only=True), folder)
    else:
        _check_folder(folder)
        model, info = _load(lambda: CLIPModel.from_pretrained(folder, local_files_only=True,
                                                              output_loading_info=True), folder)
        tokenizer = _load(lambda: CLIPTokenizer.from_pretrained(folder, local_files_only=True), folder)
        if info["missing_keys"]:
            raise QexitError(f"CLIP checkpoint {folder} lacks weights (e.g. {sorted(info['missing_keys'])[0]}); "
                             f"{SAVE_HINT}")
    model = model.float().eval()
    embeddings = class_embeddings(model, tokenizer, names)
    vit = vision_tower(model, embeddings, mean, std)
    return vit, vit.class_embeddings.clone(), functools.partial(clip_preprocess, size=vit.cfg.image_size,
                                                                 mean=mean, std=std)


def _load(read, folder: Path):
    """Run a transformers or safetensors read; any failure of a bad or truncated file is one line."""
    try:
        return read()
    except Exception as err:  # transformers, safetensors and torch raise many types here
        first = (str(err).strip().splitlines() or [""])[0]
        raise QexitError(f"cannot load the CLIP checkpoint {folder} ({type(err).__name__}: {first}); "
                         f"{SAVE_HINT}") from None


def _check_folder(folder: Path) -> None:
    """One clear line for a folder that is not a full CLIP checkpoint (before transformers guesses)."""
    if not folder.is_dir():
        raise QexitError(f"CLIP folder {folder} does not exist; {SAVE_HINT}")
    path = folder / "config.json"
    if not path.is_file():
        raise QexitError(f"{folder} is not a Hugging Face CLIP checkpoint (no config.json); {SAVE_HINT}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise QexitError(f"{path} is not readable JSON ({type(err).__name__}); {SAVE_HINT}") from None
    kind = config.get("model_type") if isinstance(config, dict) else None
    if kind == "clip_text_model":
        raise QexitError(f"{folder} holds a CLIP text tower but no vision tower; {SAVE_HINT} (a full CLIPModel)")
    if kind == "clip_vision_model":
        raise QexitError(f"{folder} holds a CLIP vision tower but no text tower for the class embeddings; "
                         f"{SAVE_HINT} (a full CLIPModel)")
    if kind != "clip":
        raise QexitError(f"{folder} holds a {kind!r} model, not CLIP (model_type 'clip'); {SAVE_HINT}")
    _check_tokenizer(folder)


def _check_tokenizer(folder: Path) -> None:
    # without these files CLIPTokenizer.from_pretrained quietly makes an empty tokenizer
    if not (folder / "tokenizer.json").is_file() and not all((folder / f).is_file() for f in ("vocab.json", "merges.txt")):
        raise QexitError(f"{folder} has no CLIP tokenizer (vocab.json and merges.txt, or tokenizer.json); {SAVE_HINT}")


def _features(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output it is (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@torch.no_grad()
def class_embeddings(model, tokenizer, class_names: list[str]) -> torch.Tensor:
    """The 5-template ensemble per class: normalise each, average, normalise again."""
    rows = []
    for name in class_names:
        tokens = tokenizer([t.format(name) for t in TEMPLATES], padding=True, truncation=True, return_tensors="pt")
        e = _features(model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        rows.append(F.normalize(F.normalize(e.float(), dim=-1).mean(0), dim=0))
    return torch.stack(rows)


@torch.no_grad()
def vision_tower(model, class_embeddings: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> CLIPViT:
    """HF CLIPModel's vision tower and projection → qexit CLIPViT (weights copied, eval mode)."""
    vc = model.config.vision_config
    if vc.hidden_act not in ACTIVATIONS:
        raise QexitError(f"the CLIP vision tower uses activation {vc.hidden_act!r}; qexit supports "
                         f"{', '.join(ACTIVATIONS)}")
    if vc.intermediate_size % vc.hidden_size:
        raise QexitError(f"the CLIP vision tower's MLP size {vc.intermediate_size} is not a multiple of its "
                         f"width {vc.hidden_size}; qexit's ViT needs an integer mlp_ratio")
    cfg = ViTConfig(image_size=vc.image_size, patch=vc.patch_size, channels=vc.num_channels, width=vc.hidden_size,
                    depth=vc.num_hidden_layers, heads=vc.num_attention_heads,
                    mlp_ratio=vc.intermediate_size // vc.hidden_size, embed_dim=model.config.projection_dim,
                    num_classes=len(class_embeddings), pre_ln=True, act=vc.hidden_act, ln_eps=vc.layer_norm_eps,
                    pixel_mean=tuple(mean), pixel_std=tuple(std))
    hf = {k: v.float() for k, v in model.state_dict().items()}
    v = "vision_model."
    conv = hf[v + "embeddings.patch_embedding.weight"]  # (width, c, ph, pw)
    sd = {
        "patch_embed.weight": conv.permute(0, 2, 3, 1).reshape(cfg.width, cfg.patch_dim),
        "patch_embed.bias": torch.zeros(cfg.width),
        "cls_token": hf[v + "embeddings.class_embedding"].reshape(1, 1, cfg.width),
        "pos_embed": hf[v + "embeddings.position_embedding.weight"][None],
        "ln_pre.weight": hf[v + "pre_layrnorm.weight"], "ln_pre.bias": hf[v + "pre_layrnorm.bias"],
        "ln_post.weight": hf[v + "post_layernorm.weight"], "ln_post.bias": hf[v + "post_layernorm.bias"],
        "proj.weight": hf["visual_projection.weight"],
        "logit_scale": hf["logit_scale"],
    }
    for i in range(cfg.depth):
        hf_layer, ours = f"{v}encoder.layers.{i}.", f"blocks.{i}."
        for p in ("weight", "bias"):
            sd[ours + "attn.qkv." + p] = torch.cat([hf[f"{hf_layer}self_attn.{n}_proj.{p}"] for n in "qkv"])
            for hf_name, name in (("layer_norm1", "ln1"), ("self_attn.out_proj", "attn.proj"),
                                  ("layer_norm2", "ln2"), ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2")):
                sd[f"{ours}{name}.{p}"] = hf[f"{hf_layer}{hf_name}.{p}"]
    vit = CLIPViT(cfg, class_embeddings)
    sd["class_embeddings"] = vit.class_embeddings
    vit.load_state_dict(sd)
    return vit.eval()


def open_clip_model(folder: Path):
    """An open_clip folder → (HF CLIPModel with the same weights, pixel mean, pixel std).

    The shapes give the sizes (as open_clip's ``build_model_from_openai_state_dict``); the config
    gives ``quick_gelu``, the vision ``head_width`` (64), the text ``heads`` (8), a LayerNorm eps
    (``norm_kwargs``, 1e-5) and the preprocessing mean and std. Variants qexit's ViT does not have
    (attention pooling, no pre-LN, a Linear text projection, timm or HF towers) are refused."""
    from transformers import CLIPConfig, CLIPModel  # lazy: the optional clip extra, checked by load_clip

    hint = "pass open_clip's CLIP ViT (e.g. ViT-B-32) saved as " + " or ".join(OPEN_CLIP_WEIGHTS)
    try:
        config = json.loads((folder / OPEN_CLIP_CONFIG).read_text())
        model_cfg = config.get("model_cfg", {})
        vision_cfg, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
        pre_cfg = config.get("preprocess_cfg", {})
    except (OSError, ValueError, AttributeError) as err:
        raise QexitError(f"{folder / OPEN_CLIP_CONFIG} is not open_clip's config JSON ({type(err).__name__}); "
                         f"{hint}") from None
    path = next((folder / n for n in OPEN_CLIP_WEIGHTS if (folder / n).is_file()), None)
    if path is None:
        raise QexitError(f"{folder} has {OPEN_CLIP_CONFIG} but no weights; {hint}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # lazy: comes with the optional clip extra
        sd = _load(lambda: load_file(path), folder)
    else:
        sd = _load(lambda: torch.load(path, map_location="cpu", weights_only=True), folder)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise QexitError(f"{path} holds a {type(sd).__name__}, not a state dict; {hint}")
    sd = {k.removeprefix("module.").removeprefix("text."): v for k, v in sd.items()}
    need = ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
            "visual.ln_post.weight", "visual.proj", "token_embedding.weight", "positional_embedding",
            "ln_final.weight", "text_projection", "logit_scale")
    missing = [k for k in need if not isinstance(sd.get(k), torch.Tensor)]
    if missing:
        raise QexitError(f"{path} is not an open_clip CLIP ViT state dict (no {missing[0]}); {hint}")
    sd = {k: v.float() for k, v in sd.items() if isinstance(v, torch.Tensor)}

    def layers(prefix):
        return len({k.split(".")[3 if prefix else 2] for k in sd if k.startswith(prefix + "transformer.resblocks.")})

    conv, pos, tproj = sd["visual.conv1.weight"], sd["visual.positional_embedding"], sd["text_projection"]
    width, patch, text_width = conv.shape[0], conv.shape[-1], sd["ln_final.weight"].shape[0]
    grid = round((pos.shape[0] - 1) ** 0.5)
    eps = vision_cfg.get("norm_kwargs", {}).get("eps", 1e-5)
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"
    cfg = CLIPConfig(
        text_config=dict(vocab_size=sd["token_embedding.weight"].shape[0], hidden_size=text_width,
                         intermediate_size=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
                         if "transformer.resblocks.0.mlp.c_fc.weight" in sd else 4 * text_width,
                         num_hidden_layers=layers(""), num_attention_heads=text_cfg.get("heads", 8),
                         max_position_embeddings=sd["positional_embedding"].shape[0], hidden_act=act,
                         layer_norm_eps=text_cfg.get("norm_kwargs", {}).get("eps", 1e-5),
                         eos_token_id=2),  # 2: pool at the highest token id, open_clip's argmax
        vision_config=dict(hidden_size=width, intermediate_size=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"]
                           .shape[0] if "visual.transformer.resblocks.0.mlp.c_fc.weight" in sd else 4 * width,
                           num_hidden_layers=layers("visual."),
                           num_attention_heads=width // vision_cfg.get("head_width", 64), patch_size=patch,
                           image_size=patch * grid, num_channels=conv.shape[1], hidden_act=act, layer_norm_eps=eps),
        projection_dim=tproj.shape[1])
    hf = {
        "vision_model.embeddings.patch_embedding.weight": conv,
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": pos,
        "visual_projection.weight": sd["visual.proj"].T, "text_projection.weight": tproj.T,
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    for ours, theirs in (("vision_model.pre_layrnorm", "visual.ln_pre"), ("vision_model.post_layernorm", "visual.ln_post"),
                         ("text_model.final_layer_norm", "ln_final")):
        for p in ("weight", "bias"):
            hf[f"{ours}.{p}"] = sd.get(f"{theirs}.{p}")
    for tower, prefix, depth in (("vision_model", "visual.", cfg.vision_config.num_hidden_layers),
                                 ("text_model", "", cfg.text_config.num_hidden_layers)):
        for i in range(depth):
            src, dst = f"{prefix}transformer.resblocks.{i}.", f"{tower}.encoder.layers.{i}."
            for p in ("weight", "bias"):
                qkv = sd.get(f"{src}attn.in_proj_{p}")
                for n, part in zip("qkv", qkv.chunk(3) if qkv is not None else (None,) * 3):
                    hf[f"{dst}self_attn.{n}_proj.{p}"] = part
                for theirs, ours in (("ln_1", "layer_norm1"), ("attn.out_proj", "self_attn.out_proj"),
                                     ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                    hf[f"{dst}{ours}.{p}"] = sd.get(f"{src}{theirs}.{p}")
    model = CLIPModel(cfg)
    expected = model.state_dict()
    gaps = sorted(k for k in expected if k not in hf and "position_ids" not in k)
    gaps += sorted(k for k, v in hf.items() if v is None or (k in expected and v.shape != expected[k].shape))
    if gaps:
        raise QexitError(f"{path} does not fit a standard open_clip CLIP ViT (at {gaps[0]}); {hint}")
    model.load_state_dict({k: v for k, v in hf.items()}, strict=False)
    mean, std = tuple(pre_cfg.get("mean", CLIP_MEAN)), tuple(pre_cfg.get("std", CLIP_STD))
    return model.eval(), mean, std
