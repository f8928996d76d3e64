#!/usr/bin/env python3
"""Convert the released big-lama checkpoint into lli's LaMa model directory.

    convert-lama.py SRC OUT_DIR [--config CONFIG_YAML]

SRC is the directory unpacked from big-lama.zip (config.yaml + models/best.ckpt) or a best.ckpt
file (its config then comes from --config, or from config.yaml beside it or one level up).
OUT_DIR receives:
  generator.safetensors  the generator's state_dict with its original key names (model.1.ffc...,
                         BatchNorm running statistics and num_batches_tracked included); the
                         Lightning checkpoint's `generator.` prefix is removed and everything else
                         (discriminator, loss networks, evaluators, optimizer state) is dropped
  config.yaml            the training config's `generator` and `training_model` sections, verbatim
                         (OmegaConf ${...} references are resolved by lli when it loads them)

Needs only Python 3 + torch (Debian's python3-torch, with numpy). The checkpoint is unpickled with
a restricted unpickler: torch's own types and plain containers are rebuilt; any other class (the
Lightning/OmegaConf objects in a training checkpoint) becomes an inert placeholder, so neither
pytorch_lightning nor omegaconf is needed and no foreign code runs. lli itself never unpickles.
"""
import argparse
import json
import os
import pickle
import struct
import sys
import types

import torch

# ---- restricted unpickling -----------------------------------------------------------------------

_SAFE_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "int", "float", "str", "bytes",
                  "bytearray", "complex", "slice", "range", "bool", "object"}


class _Placeholder:
    """Stands in for an object of a class this script does not load (hyper-parameters, callbacks)."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __call__(self, *args, **kwargs):
        return _Placeholder()


def _allowed(module, name):
    if module == "torch":
        obj = getattr(torch, name, None)
        return name in ("Size", "device") or name.endswith("Storage") or isinstance(obj, (torch.dtype, torch.device))
    if module == "torch._utils":
        return name.startswith("_rebuild_")
    if module == "torch.nn.parameter":
        return name == "Parameter"
    if module == "collections":
        return name in ("OrderedDict", "defaultdict")
    if module in ("numpy.core.multiarray", "numpy"):
        return name in ("_reconstruct", "scalar", "dtype", "ndarray")
    if module == "_codecs":
        return name == "encode"
    return module == "builtins" and name in _SAFE_BUILTINS


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if _allowed(module, name):
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                pass
        return type(name, (_Placeholder,), {"__module__": "placeholder." + module})


# A stand-in for the pickle module whose unpickling is restricted (everything else: pickle's).
_restricted_pickle = types.ModuleType("restricted_pickle")
_restricted_pickle.Unpickler = _RestrictedUnpickler
_restricted_pickle.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
_restricted_pickle.__getattr__ = lambda name: getattr(pickle, name)


def load_checkpoint(path):
    # Some torch builds (Debian's 1.13) replace pickle_module by their module-level `pickle` unless
    # weights_only is set: that global is swapped for the duration of the load.
    import torch.serialization as serialization
    saved = serialization.pickle
    serialization.pickle = _restricted_pickle
    try:
        return torch.load(path, map_location="cpu", pickle_module=_restricted_pickle)
    finally:
        serialization.pickle = saved


# ---- safetensors writer --------------------------------------------------------------------------

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}


def tensor_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()  # this machine's byte order: little-endian on x86-64 / arm64


def write_safetensors(path, tensors, metadata):
    """8-byte little-endian header length, JSON header (padded to 8 bytes), raw data."""
    if sys.byteorder != "little":
        raise SystemExit("convert-lama.py: safetensors data is little-endian; run on a little-endian machine")
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _DTYPES:
            raise SystemExit(f"convert-lama.py: {name}: unsupported dtype {t.dtype}")
        data = tensor_bytes(t)
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---- config.yaml ---------------------------------------------------------------------------------

def top_level_sections(text, names):
    """The named top-level blocks of a block-style YAML file, verbatim, in file order."""
    out, keep = [], False
    for line in text.splitlines():
        top = line[:1] not in ("", " ", "\t", "#", "-")
        if top:
            key = line.split(":", 1)[0].strip()
            keep = key in names
        if keep:
            out.append(line)
    return "\n".join(out).rstrip() + "\n"


def find_config(src, explicit):
    if explicit:
        return explicit
    cands = [os.path.join(src, "config.yaml")] if os.path.isdir(src) else []
    d = os.path.dirname(os.path.abspath(src)) if not os.path.isdir(src) else None
    if d:
        cands += [os.path.join(d, "config.yaml"), os.path.join(os.path.dirname(d), "config.yaml")]
    for c in cands:
        if os.path.isfile(c):
            return c
    raise SystemExit("convert-lama.py: no config.yaml found next to the checkpoint; pass --config")


def find_ckpt(src):
    if not os.path.isdir(src):
        return src
    for c in (os.path.join(src, "models", "best.ckpt"), os.path.join(src, "best.ckpt")):
        if os.path.isfile(c):
            return c
    raise SystemExit(f"convert-lama.py: {src}: no models/best.ckpt inside")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="big-lama directory (config.yaml + models/best.ckpt) or a best.ckpt")
    ap.add_argument("out_dir", help="output directory (generator.safetensors + config.yaml)")
    ap.add_argument("--config", help="training config.yaml (default: found next to the checkpoint)")
    args = ap.parse_args()

    ckpt_path = find_ckpt(args.src)
    config_path = find_config(args.src, args.config)
    ckpt = load_checkpoint(ckpt_path)
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise SystemExit(f"convert-lama.py: {ckpt_path}: no state_dict in the checkpoint")

    prefix = "generator."
    generator, dropped = {}, {}
    for k, v in state.items():
        if k.startswith(prefix) and torch.is_tensor(v):
            generator[k[len(prefix):]] = v
        else:
            dropped[k.split(".")[0]] = dropped.get(k.split(".")[0], 0) + 1
    if not generator and any(k.startswith("model.") for k in state):
        generator, dropped = {k: v for k, v in state.items() if torch.is_tensor(v)}, {}  # a bare generator
    if not generator:
        raise SystemExit(f"convert-lama.py: {ckpt_path}: no generator.* tensors in the state_dict")

    with open(config_path, "r", encoding="utf-8") as f:
        config_text = f.read()
    sections = top_level_sections(config_text, {"generator", "training_model"})
    if not any(line.startswith("generator:") for line in sections.splitlines()):
        raise SystemExit(f"convert-lama.py: {config_path}: no top-level 'generator' section")

    os.makedirs(args.out_dir, exist_ok=True)
    write_safetensors(os.path.join(args.out_dir, "generator.safetensors"), generator,
                      {"format": "pt", "source": os.path.basename(ckpt_path), "converter": "convert-lama.py"})
    with open(os.path.join(args.out_dir, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(f"# LaMa generator config from {os.path.basename(config_path)} (convert-lama.py)\n")
        f.write(sections)

    n_params = sum(v.numel() for k, v in generator.items() if v.is_floating_point())
    print(f"generator: {len(generator)} tensors, {n_params / 1e6:.2f} M values -> "
          f"{os.path.join(args.out_dir, 'generator.safetensors')}")
    for k in sorted(dropped):
        print(f"dropped: {k}.* ({dropped[k]} entries)")
    print(f"config: generator + training_model sections -> {os.path.join(args.out_dir, 'config.yaml')}")


if __name__ == "__main__":
    main()
