"""Model files and the shipped model zoo: safetensors weights, hash-checked, found by name or id.

A model file holds the float weights ("float.*", for NLL and fine-tuning), the exact integer
network ("exact.*", the only part the coder uses), the lookup tables ("lut.*") and metadata:
format tag, name and the ModelConfig as JSON, so the file rebuilds its model alone. A .pxz file
names its models by the first 2 bytes of the file's sha256 (`Model.id`).

An ensemble file (format ENSEMBLE_FORMAT, see ensemble.py) holds M such networks of one config,
member i's tensors prefixed "m{i}.", with the config, the integer member weights ("prior") and the
members' names and sha256 (provenance) in its metadata. It is a model like any other: one id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pxzip.config import ModelConfig
from pxzip.ensemble import ExactEnsemble, check_members
from pxzip.errors import ModelFileError, ModelNotFoundError, UsageError
from pxzip.exact import ExactModel

MODEL_FORMAT = "pxzip-model-1"
ENSEMBLE_FORMAT = "pxzip-ensemble-1"

# Shipped models: name -> sha256 of the weights file (checked on every load).
REGISTRY: dict[str, str] = {}
# Default model per plane kind for small images (both sides <= LARGE_SIDE: CIFAR-10 sized, one tile).
DEFAULTS = {"rgb": "pxz-rgb-cifar", "gray": "pxz-gray-cifar", "bilevel": "pxz-bilevel"}
# ... and for larger ones (photographs, coded in tiles): pxz-rgb-photo is pxz-rgb-cifar fine-tuned
# on 64x64 crops of photos, pxz-gray-photo is pxz-rgb-photo made gray (train_cli.gray_from_rgb);
# both chosen on held-out photos (see their cards).
LARGE_DEFAULTS = {"rgb": "pxz-rgb-photo", "gray": "pxz-gray-photo"}
LARGE_SIDE = 64  # an image with a side above this is "large"


def models_dir() -> Path:
    """Where the shipped weights live: the installed package data, else the repo's models/."""
    try:
        import pxzip_models  # the repo's models/ folder, installed as package data

        for p in pxzip_models.__path__:
            if Path(p).is_dir():
                return Path(p)
    except ImportError:
        pass
    return Path(__file__).resolve().parent.parent / "models"


def _load_registry() -> None:
    reg = models_dir() / "zoo.json"
    if reg.is_file() and not REGISTRY:
        REGISTRY.update(json.loads(reg.read_text())["models"])


def registry() -> dict[str, str]:
    """Shipped model names -> sha256 of their weights files."""
    _load_registry()
    return dict(REGISTRY)


@dataclass
class Model:
    """A loaded model: config, exact network, identity.

    cfg is the config the coder's tables read: for an ensemble, its members' config with all their
    mixture components (`ensemble.head_config`).
    """

    name: str
    sha256: str
    cfg: ModelConfig
    exact: ExactModel | ExactEnsemble
    path: Path | None = None
    # copies of this model whose exact network lives on another torch device (see `on`)
    _on_device: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def on(self, device) -> Model:
        """This model with its exact network on `device` (a torch.device; the CPU: this model itself).
        The copy is made once per device and kept: the same integers, computed there."""
        import copy

        import torch

        dev = torch.device(device)
        if dev.type == "cpu":
            return self
        if dev not in self._on_device:
            self._on_device[dev] = dataclasses.replace(self, exact=copy.deepcopy(self.exact).to(dev), _on_device={})
        return self._on_device[dev]

    @property
    def members(self) -> int:
        """Networks evaluated per step: 1, or an ensemble's size."""
        return len(self.exact.members) if isinstance(self.exact, ExactEnsemble) else 1

    @property
    def id(self) -> bytes:
        return bytes.fromhex(self.sha256[:4])

    @property
    def kind(self) -> str:
        if self.cfg.bilevel:
            return "bilevel"
        return "rgb" if self.cfg.in_channels == 3 else "gray"

    def float_model(self):
        """The float PixelCNN (for NLL / training), rebuilt from the same file."""
        from safetensors.torch import load_file

        from pxzip.model import PixelCNN

        t = load_file(str(self.path))

        def member(prefix: str, cfg: ModelConfig) -> PixelCNN:
            m = PixelCNN(cfg)
            m.load_state_dict({k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)})
            return m

        if isinstance(self.exact, ExactEnsemble):
            from pxzip.ensemble import FloatEnsemble

            cfg, prior = self.exact.member_cfg, self.exact.prior.tolist()
            return FloatEnsemble([member(f"m{i}.float.", cfg) for i in range(self.members)], prior).eval()
        return member("float.", self.cfg).eval()


def save_model(path: str | Path, float_model, name: str, extra: dict | None = None) -> str:
    """Export a trained float model with its exact integer version; returns the file's sha256."""
    from safetensors.torch import save

    em = ExactModel.from_float(float_model)
    tensors = {f"float.{k}": v.detach().cpu().float().contiguous() for k, v in float_model.state_dict().items()}
    tensors |= em.state()
    meta = {"format": MODEL_FORMAT, "name": name, "config": float_model.cfg.to_json()}
    meta |= {k: json.dumps(v) for k, v in (extra or {}).items()}
    return _write(path, _canonical(save(tensors, metadata=meta)))


def save_ensemble(path: str | Path, members: list[Model], prior: list[int], name: str) -> str:
    """Write an ensemble of single-network models with integer weights; returns the file's sha256."""
    from safetensors.torch import load_file as st_load_file
    from safetensors.torch import save

    if any(m.members != 1 for m in members):
        raise ValueError("ensemble members must be single networks, not ensembles")
    ExactEnsemble([m.exact for m in members], prior)  # the checks loading it will make (check_members, LUTs)
    prior = [int(p) for p in prior]  # JSON takes Python ints, not numpy's (after the check: no silent rounding)
    tensors = {}
    for i, m in enumerate(members):
        tensors |= {f"m{i}.{k}": v for k, v in st_load_file(str(m.path)).items()}
    meta = {
        "format": ENSEMBLE_FORMAT,
        "name": name,
        "config": members[0].cfg.to_json(),
        "prior": json.dumps(list(prior)),
        "members": json.dumps([{"name": m.name, "sha256": m.sha256} for m in members]),
    }
    return _write(path, _canonical(save(tensors, metadata=meta)))


def _write(path: str | Path, raw: bytes) -> str:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(raw)
    tmp.replace(path)
    return hashlib.sha256(raw).hexdigest()


def _canonical(raw: bytes) -> bytes:
    """Rewrite a safetensors header with sorted keys, so the same weights give the same bytes.

    safetensors writes the metadata in hash-map order, which differs between processes; the file's
    sha256 is the model's identity in .pxz headers, so it must be a function of the content alone.
    Tensor offsets are relative to the data section, so only the header changes.
    """
    n = int.from_bytes(raw[:8], "little")
    head = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # keep the data section 8-byte aligned, as safetensors does
    return len(head).to_bytes(8, "little") + head + raw[8 + n :]


_CACHE: dict[str, Model] = {}  # sha256 -> model
# resolved path -> (its stat key, sha256): a file whose inode, size, mtime and ctime are unchanged
# is not read and hashed again (2.5 ms a call, 5% of coding one CIFAR-10 image). ctime cannot be
# set back by a user, so a rewrite, even one that restores the mtime, changes the key, except within
# the filesystem's timestamp granularity: as git does with its "racy" files, a file changed less
# than RACY_NS before it was read is not remembered, so such a rewrite is hashed anew too.
_SEEN: dict[str, tuple[tuple[int, ...], str]] = {}
RACY_NS = 2_000_000_000


def _stat_key(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_expected(path: Path, digest: str, expected: str | None) -> None:
    if expected and digest != expected:
        raise ModelFileError(f"model file {path} has sha256 {digest[:12]}..., expected {expected[:12]}...: refusing it")


def load_file(path: str | Path, expected_sha256: str | None = None) -> Model:
    """Load a model file; refuses tampered, foreign or inconsistent files with ModelFileError."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    where = str(path.resolve())
    key, seen = _stat_key(path), _SEEN.get(where)
    if key is not None and seen is not None and seen[0] == key and seen[1] in _CACHE:
        _check_expected(path, seen[1], expected_sha256)
        return _CACHE[seen[1]]
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read model file {path}: {e.strerror}") from None
    digest = hashlib.sha256(raw).hexdigest()
    if key is not None and time.time_ns() - max(key[3], key[4]) > RACY_NS:
        _SEEN[where] = (key, digest)
    _check_expected(path, digest, expected_sha256)  # before the cache: a copy of another model is refused too
    if digest in _CACHE:
        return _CACHE[digest]
    try:
        tensors = st_load(raw)  # the very bytes that were hashed
        n = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
        fmt = meta.get("format")
        if fmt not in (MODEL_FORMAT, ENSEMBLE_FORMAT):
            raise ModelFileError(f"{path} is not a pxzip model file (format {fmt!r})")
        cfg = ModelConfig.from_json(meta["config"])
        if fmt == ENSEMBLE_FORMAT:
            prior = json.loads(meta["prior"])
            if not isinstance(prior, list):
                raise ValueError("prior is not a list")
            check_members([cfg] * len(prior), prior)  # bounds the member count before reading members
            members = []
            for i in range(len(prior)):
                pre = f"m{i}."
                own = {k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)}
                members.append(ExactModel.from_state(cfg, own))
            exact = ExactEnsemble(members, prior)
            cfg = exact.cfg
        else:
            exact = ExactModel.from_state(cfg, tensors)
    except ModelFileError:
        raise
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError) as e:
        raise ModelFileError(f"{path} is not a valid pxzip model file ({type(e).__name__}: {e})") from None
    model = Model(meta.get("name", path.stem), digest, cfg, exact, path)
    _CACHE[digest] = model
    return model


def installed() -> dict[str, Path]:
    """Shipped models plus any in $PXZIP_MODELS (a folder of .safetensors files), by name."""
    _load_registry()
    found = {name: models_dir() / f"{name}.safetensors" for name in REGISTRY}
    extra = os.environ.get("PXZIP_MODELS")
    if extra:
        for p in sorted(Path(extra).glob("*.safetensors")):
            found.setdefault(p.stem, p)
    return found


def load_model(name_or_path: str | Path | Model) -> Model:
    """A model by zoo name or by file path (hash-checked against the registry for zoo models)."""
    if isinstance(name_or_path, Model):
        return name_or_path
    _load_registry()
    known = installed()
    key = str(name_or_path)
    if key in known:
        m = load_file(known[key], REGISTRY.get(key))
        # the zoo name wins over the one stored in the file: a superseded model is renamed
        # (pxz-rgb-cifar -> pxz-rgb-cifar-v1) without changing its bytes, hence its id
        return m if m.name == key else dataclasses.replace(m, name=key)
    p = Path(key)
    if p.suffix == ".safetensors" or p.is_file():
        if not p.is_file():
            raise UsageError(f"model file {p} does not exist")
        return load_file(p)
    raise UsageError(f"unknown model {key!r} (installed: {', '.join(sorted(known)) or 'none'})")


def default_name(kind: str, height: int = 0, width: int = 0) -> str:
    """The name of the shipped default for a plane kind ("rgb", "gray" or "bilevel") and image size."""
    if max(height, width) > LARGE_SIDE and kind in LARGE_DEFAULTS:
        return LARGE_DEFAULTS[kind]
    return DEFAULTS[kind]


def default_model(kind: str, height: int = 0, width: int = 0) -> Model:
    """The shipped default model for a plane kind ("rgb", "gray" or "bilevel") and image size (0: small)."""
    return load_model(default_name(kind, height, width))


def find_by_id(model_id: bytes, candidates: list[Model] | None = None) -> Model:
    """The model a .pxz file names by id, among the given ones and everything installed."""
    for m in candidates or []:
        if m.id == model_id:
            return m
    for name, path in installed().items():
        if not path.is_file():
            continue
        expected = REGISTRY.get(name)
        if expected and expected[:4] != model_id.hex():
            continue  # cheap: zoo ids are known without reading the file
        try:
            m = load_file(path, expected)
        except (ModelFileError, UsageError):
            continue  # one broken file in $PXZIP_MODELS must not hide the right model
        if m.id == model_id:
            return dataclasses.replace(m, name=name) if name in REGISTRY and m.name != name else m
    raise ModelNotFoundError(
        f"this file was made with model id {model_id.hex()}, which is not installed "
        "(pass it with --model FILE, or put it in $PXZIP_MODELS)"
    )
