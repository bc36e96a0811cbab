"""Checkpoints: our format (config.json + model.safetensors + tokenizer.model) and the authors'
release format (config.json + consolidate_config.json + consolidated[.NN].pth), loaded without
unpickling anything (`torch.load(weights_only=True)`)."""

from __future__ import annotations

import json
import re
import shutil
from importlib.resources import files
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from megadoc.display import one_line
from megadoc.engine.config import MegalodonConfig
from megadoc.engine.model import Megalodon

TIED_KEY = "output.output.weight"
# The models shipped inside the `megadoc` package (megadoc/models/<name>/), wherever it is installed.
MODELS_DIR = Path(str(files("megadoc") / "models"))


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line naming the file and tensor."""


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A directory, or the name of a model shipped in megadoc/models/."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = MODELS_DIR / str(name_or_path)
    if shipped.is_dir() and (shipped / "model.safetensors").is_file():
        return shipped
    if shipped.is_dir() or str(name_or_path) == "mini":
        raise CheckpointError(f"model {name_or_path!r} is not installed yet (no weights in {shipped})")
    raise CheckpointError(f"{name_or_path}: no such model directory or installed model name")


def is_reference_checkpoint(directory: Path) -> bool:
    return (directory / "consolidate_config.json").is_file()


def load_pretrained(
    name_or_path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Megalodon:
    """Load our format or the authors' release; dtype defaults to float32 on CPU, bf16 on GPU."""
    directory = resolve_model_dir(name_or_path)
    if is_reference_checkpoint(directory):
        config, tensors = read_reference_checkpoint(directory)
    else:
        config, tensors = read_checkpoint(directory)
    model = build_model(config, tensors, source=directory)
    return model.to(device=device, dtype=dtype or default_dtype(torch.device(device))).eval()


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (the Triton kernels' speed, half the memory); float32 on CPU, where bf16 is slow."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def read_checkpoint(directory: Path) -> tuple[MegalodonConfig, dict[str, torch.Tensor]]:
    config = MegalodonConfig.load(directory / "config.json")
    weights = directory / "model.safetensors"
    try:
        tensors = load_file(str(weights))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"{weights}: unreadable weights ({error})") from None
    return config, tensors


def build_model(config: MegalodonConfig, tensors: dict[str, torch.Tensor], source: Path) -> Megalodon:
    """A model holding exactly `tensors`; any missing, extra or mis-shaped tensor is an error."""
    with torch.device("meta"):
        model = Megalodon(config)
    expected = dict(model.state_dict())
    if config.share_emb:
        expected.pop(TIED_KEY, None)
        tensors = {k: v for k, v in tensors.items() if k != TIED_KEY}
    for name, tensor in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{source}: missing tensor {name}")
        if tuple(tensors[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensors[name].shape)}, "
                f"the config needs {tuple(tensor.shape)}"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor {extra[0]}")
    if config.share_emb:
        tensors = tensors | {TIED_KEY: tensors["embed.weight"]}
    model.load_state_dict(tensors, strict=True, assign=True)
    if config.share_emb:
        model.output.output.weight = model.embed.weight
    return model.eval()  # for inference (no dropout) until a trainer calls .train()


def save_pretrained(model: Megalodon, directory: str | Path, tokenizer_path: str | Path | None = None) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save(directory / "config.json")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.config.share_emb:
        tensors.pop(TIED_KEY)
    tmp = directory / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "megadoc"})
    tmp.replace(directory / "model.safetensors")
    if tokenizer_path is not None and Path(tokenizer_path).resolve() != (directory / "tokenizer.model").resolve():
        shutil.copyfile(tokenizer_path, directory / "tokenizer.model")


# -- the authors' release format ----------------------------------------------------------------

# How model-parallel shards merge (megalodon-spec.md): the dimension to concatenate along, or None
# where every rank holds the same full tensor.
_SHARD_RULES: list[tuple[str, int | None]] = [
    (r"^(embed\.weight|output\.output\.weight)$", 1),
    (r"\.mega\.(wz|wv|wr|wh1)\.(weight|bias)$", 0),
    (r"\.(mega\.wh2|nffn\.fc2)\.weight$", 1),
    (r"\.nffn\.(fc1|fc3)\.weight$", 0),
    (r"\.mega\.(gamma|beta)$", 1),
    (r"\.cema\.(alpha|delta|theta|gamma|omega)$", 0),
    (r"(timenorm|final_norm)\.(weight|bias|prior_mean|prior_logv)$", 0),
    (r"(mega\.rmsnorm\.weight|nffn\.norm\.(weight|bias)|nffn\.alpha|^rope\.freqs|prior_count)$", None),
]


def _merge_dim(name: str) -> int | None:
    for pattern, dim in _SHARD_RULES:
        if re.search(pattern, name):
            return dim
    raise CheckpointError(f"unexpected tensor {name} in the reference checkpoint")


def _load_pth(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as error:  # torch raises many types for a truncated or hostile pickle
        raise CheckpointError(f"{path}: unreadable checkpoint file ({one_line(error)})") from None
    if isinstance(data, dict) and "model" in data and isinstance(data["model"], dict):
        data = data["model"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return data


def merge_shards(shards: list[dict[str, torch.Tensor]], source: Path) -> dict[str, torch.Tensor]:
    """One state dict from model-parallel shards, by the spec's partition rules."""
    if len(shards) == 1:
        return dict(shards[0])
    names = list(shards[0])
    for rank, shard in enumerate(shards[1:], start=1):
        if set(shard) != set(names):
            odd = sorted(set(shard) ^ set(names))[0]
            raise CheckpointError(f"{source}: shard {rank} and shard 0 differ in tensor {odd}")
    merged = {}
    for name in names:
        dim = _merge_dim(name)
        parts = [shard[name] for shard in shards]
        merged[name] = parts[0] if dim is None else torch.cat(parts, dim=dim)
    return merged


def read_reference_checkpoint(directory: Path) -> tuple[MegalodonConfig, dict[str, torch.Tensor]]:
    try:
        top = json.loads((directory / "config.json").read_text())
        parallel = json.loads((directory / "consolidate_config.json").read_text())
        size = int(parallel["model_parallel_size"])
        model_conf = top["model"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{directory}: unreadable reference config ({error})") from None
    if size == 1:
        files = [directory / "consolidated.pth"]
    else:
        files = [directory / f"consolidated.{rank:02d}.pth" for rank in range(size)]
    found = sorted(directory.glob("consolidated*.pth"))
    if sorted(files) != found:
        raise CheckpointError(
            f"{directory}: consolidate_config.json says {size} shard(s) but the directory holds "
            f"{', '.join(f.name for f in found) or 'none'}"
        )
    tensors = merge_shards([_load_pth(f) for f in files], directory)
    vocab_size = None
    tokenizer = directory / top.get("tokenizer", {}).get("path", "tokenizer.model")
    if model_conf.get("vocab_size", -1) == -1 and tokenizer.is_file():
        from megadoc.engine.tokenizer import Tokenizer

        vocab_size = Tokenizer.load(tokenizer).vocab_size
    if model_conf.get("vocab_size", -1) == -1 and vocab_size is None and "embed.weight" in tensors:
        vocab_size = tensors["embed.weight"].shape[0]
    config = MegalodonConfig.from_reference(model_conf, vocab_size=vocab_size)
    return config, {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def convert_reference(reference_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a reference release as our format (config, safetensors, and its tokenizer if present)."""
    reference_dir, out_dir = Path(reference_dir), Path(out_dir)
    config, tensors = read_reference_checkpoint(reference_dir)
    model = build_model(config, tensors, source=reference_dir)
    tokenizer_name = "tokenizer.model"
    try:
        tokenizer_name = json.loads((reference_dir / "config.json").read_text())["tokenizer"]["path"]
    except (KeyError, TypeError):
        pass
    tokenizer = reference_dir / Path(tokenizer_name).name
    save_pretrained(model, out_dir, tokenizer if tokenizer.is_file() else None)
    return out_dir
