"""Read the weights of a checkpoint file, memory-mapped and without running code from it.

Released CCEdit checkpoints are PyTorch-Lightning `.ckpt` files of about 11 GB: a torch zip archive whose pickle
holds the weights under `"state_dict"` next to Lightning extras (hyper-parameters as OmegaConf objects, callback
and optimizer states). [`open_state_dict`] returns only the weights, as tensors that view a private memory map of
the file, so a file larger than the free RAM can be converted and nothing is read before it is used.

Pickle is a small program: a `REDUCE` instruction calls whatever global the file names. `torch.load` either runs
it (`weights_only=False`) or refuses the whole file at the first unknown class (`weights_only=True`), which rejects
every Lightning checkpoint whose hyper-parameters are OmegaConf objects. ccedit reads the pickle with its own
restricted unpickler instead:

1. Tensor reconstruction and plain containers resolve to ccedit's own functions and types (see `_SAFE_GLOBALS`);
   storages come from the memory-mapped zip entries, never from the pickle.
2. Any other global, from `pytorch_lightning.*` to `os.system`, is **never imported**: it becomes an inert
   stand-in class whose construction does nothing.
3. Extras outside the weights may hold such stand-ins; they are dropped and logged. A stand-in where the weights
   should be (the pickle's root, its `state_dict` entry or any value in it) means the file asked to run code to
   produce its weights, and loading stops with a [`~ccedit.errors.UserError`].

torch's pre-1.6 ("legacy") serialization is refused with a hint to re-save the file; `.safetensors` files are read
with `safetensors.safe_open`, which maps the file the same way.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import torch

from ..errors import ModelNotFoundError, UserError

logger = logging.getLogger(__name__)

# The first pickle of torch's legacy (pre-1.6, non-zip) format is this number.
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., file name length, extra field length
_ZIP_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"
# How deep `_find_stand_in` looks into a non-tensor value of the state dict.
_MAX_SEARCH_DEPTH = 8


class _CorruptCheckpoint(Exception):
    """The pickle or the zip entries do not describe tensors consistently."""


# 1. Inert stand-ins for globals ccedit refuses to import.


class _StandIn:
    """Replaces a global named by the checkpoint that ccedit never imports; creating or filling one does nothing.

    Subclasses carry the global's dotted name in `qualname`. The pickle may call the class (`REDUCE`, `NEWOBJ`),
    then fill the instance (`BUILD`, `SETITEMS`, `APPENDS`); every such hook is a no-op.
    """

    qualname: ClassVar[str] = "<unknown>"

    def __new__(cls, *args: Any, **kwargs: Any) -> _StandIn:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


def _stand_in_class(qualname: str) -> type[_StandIn]:
    """Returns a fresh stand-in class for the global `qualname`."""
    return type("StandIn", (_StandIn,), {"qualname": qualname})


def _stand_in_name(value: Any) -> str | None:
    """Returns the global's name if `value` is a stand-in class or an instance of one."""
    if isinstance(value, _StandIn):
        return value.qualname
    if isinstance(value, type) and issubclass(value, _StandIn):
        return value.qualname
    return None


def _find_stand_in(value: Any, depth: int = 0) -> str | None:
    """Returns the name of the first stand-in inside `value` (containers are searched a few levels deep)."""
    name = _stand_in_name(value)
    if name is not None or depth >= _MAX_SEARCH_DEPTH:
        return name
    if isinstance(value, dict):
        items: list[Any] = [*value.keys(), *value.values()]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        return None
    for item in items:
        name = _find_stand_in(item, depth + 1)
        if name is not None:
            return name
    return None


# 2. Tensor reconstruction: ccedit's own versions of the torch functions a torch.save pickle names.


class _StorageType:
    """What the pickle gets for a storage class such as `torch.FloatStorage`: only its dtype, not the class."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _Storage:
    """A zip entry of the checkpoint, viewed through the file's memory map, with the dtype it was saved with."""

    def __init__(self, untyped: torch.UntypedStorage, dtype: torch.dtype) -> None:
        self.untyped = untyped
        self.dtype = dtype


def _make_tensor(storage: Any, dtype: Any, storage_offset: Any, size: Any, stride: Any) -> torch.Tensor | _StandIn:
    """Creates a tensor viewing `storage` after checking that the view stays inside it.

    A storage made by a stand-in (e.g. `torch.storage._load_from_bytes` in a plain pickle of tensors) makes the
    tensor a stand-in too: inert among the extras, refused among the weights.
    """
    name = _stand_in_name(storage)
    if name is not None:
        return _stand_in_class(name)()
    if not isinstance(storage, _Storage) or not isinstance(dtype, torch.dtype):
        raise _CorruptCheckpoint("a tensor is not backed by stored data")
    integers = [storage_offset, *size, *stride]
    if not all(type(value) is int and value >= 0 for value in integers) or len(size) != len(stride):
        raise _CorruptCheckpoint(f"invalid tensor geometry (offset {storage_offset}, size {size}, stride {stride})")
    if all(extent > 0 for extent in size):
        last_element = storage_offset + sum((extent - 1) * step for extent, step in zip(size, stride))
        if (last_element + 1) * dtype.itemsize > storage.untyped.nbytes():
            raise _CorruptCheckpoint(f"a tensor of size {tuple(size)} reaches past the end of its stored data")
    tensor = torch.empty(0, dtype=dtype)
    return tensor.set_(storage.untyped, storage_offset, torch.Size(size), tuple(stride))


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False, backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor | _StandIn:
    """Stands in for `torch._utils._rebuild_tensor_v2`; gradients, hooks and metadata do not matter for weights."""
    return _make_tensor(storage, getattr(storage, "dtype", None), storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any, backward_hooks: Any, dtype: Any,
    metadata: Any = None,
) -> torch.Tensor | _StandIn:
    """Stands in for `torch._utils._rebuild_tensor_v3` (used for dtypes without a legacy storage class)."""
    return _make_tensor(storage, dtype, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    """Stands in for `torch._utils._rebuild_parameter(_with_state)`; a weight needs no `nn.Parameter` wrapper."""
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """Stands in for `torch._tensor._rebuild_from_type_v2`: rebuilds the plain tensor and drops the subclass.

    `func` came out of this unpickler, so it is either one of the functions above or an inert stand-in.
    """
    if not isinstance(args, tuple):
        raise _CorruptCheckpoint("invalid tensor subclass record")
    return func(*args)


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Stands in for `_codecs.encode`, which protocol-2 pickles use to store `bytes`; only that use is allowed."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _CorruptCheckpoint("unexpected use of _codecs.encode")
    return text.encode("latin1")


_SAFE_GLOBALS: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "builtins.complex": complex,
    "_codecs.encode": _latin1_bytes,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
    "torch.Size": torch.Size,
}
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "ByteStorage": torch.uint8,
    "CharStorage": torch.int8,
    "ShortStorage": torch.int16,
    "IntStorage": torch.int32,
    "LongStorage": torch.int64,
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    # Untyped storages (saved for dtypes without a legacy class) are bytes; `_rebuild_tensor_v3` names the dtype.
    "UntypedStorage": torch.uint8,
}
# `torch.float16` and friends are pickled as globals; `vars` avoids torch's lazy submodule imports in `getattr`.
_DTYPES: dict[str, torch.dtype] = {name: value for name, value in vars(torch).items() if isinstance(value, torch.dtype)}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles tensors and plain data; every other global becomes an inert [`_StandIn`] and is never imported.

    Args:
        file (`BinaryIO`): the pickle stream.
        load_storage (`Callable[[str, torch.dtype, int], torch.UntypedStorage]`, *optional*):
            Returns the bytes of zip entry `data/<key>` holding `numel` elements of `dtype`. Without it (a plain
            pickle file) any tensor record is an error.
    """

    def __init__(self, file: BinaryIO, load_storage: Any = None) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self._storages: dict[str, _Storage] = {}
        # Dotted names of the globals replaced by stand-ins, in order of first appearance.
        self.replaced: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        qualname = f"{module}.{name}"
        if qualname in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[qualname]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        if qualname not in self.replaced:
            self.replaced.append(qualname)
        return _stand_in_class(qualname)

    def persistent_load(self, pid: Any) -> _Storage:
        # torch.save writes ("storage", storage type, key, location, number of elements) for each storage.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise _CorruptCheckpoint(f"unsupported persistent record {str(pid)[:80]}")
        if self._load_storage is None:
            raise _CorruptCheckpoint("tensor data outside a torch zip archive")
        _, storage_type, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            if type(numel) is not int or numel < 0:
                raise _CorruptCheckpoint(f"invalid element count for storage {key}")
            untyped = self._load_storage(key, storage_type.dtype, numel)
            self._storages[key] = _Storage(untyped, storage_type.dtype)
        return self._storages[key]


# Everything a damaged or hostile pickle can make the unpickler raise.
_UNPICKLING_ERRORS = (
    _CorruptCheckpoint, pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError,
    KeyError, RecursionError, RuntimeError, struct.error, UnicodeDecodeError, zipfile.BadZipFile,
)


# 3. File formats.


def _sniff(path: Path) -> str:
    """Returns `"zip"`, `"pickle"`, `"safetensors"`, `"empty"` or `"unknown"` from the first bytes of the file."""
    with path.open("rb") as file:
        head = file.read(9)
    if not head:
        return "empty"
    if head.startswith(_ZIP_LOCAL_HEADER_SIGNATURE):
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # PROTO opcode and a known protocol
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{":  # 8-byte little-endian header length, then the JSON header
        return "safetensors"
    return "unknown"


def _open_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Reads a `.safetensors` file; `safe_open` maps the file, so the tensors are views of it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            return {key: file.get_tensor(key) for key in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"cannot read {path}: damaged or truncated safetensors file ({detail}); download it again")


def _entry_data_offset(file: BinaryIO, info: zipfile.ZipInfo) -> int:
    """Returns where the bytes of a stored (uncompressed) zip entry start in the file."""
    file.seek(info.header_offset)
    raw = file.read(_ZIP_LOCAL_HEADER.size)
    if len(raw) != _ZIP_LOCAL_HEADER.size:
        raise _CorruptCheckpoint(f"zip entry {info.filename} lies past the end of the file")
    signature, name_length, extra_length = _ZIP_LOCAL_HEADER.unpack(raw)
    if signature != _ZIP_LOCAL_HEADER_SIGNATURE:
        raise _CorruptCheckpoint(f"zip entry {info.filename} has no local header")
    return info.header_offset + _ZIP_LOCAL_HEADER.size + name_length + extra_length


def _unpickle_torch_zip(path: Path) -> tuple[Any, list[str]]:
    """Unpickles `<archive>/data.pkl` of a torch zip file; tensors view a private memory map of the file."""
    file_size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise UserError(
            f"cannot read {path}: the file is truncated or damaged (its zip directory is missing); download it again"
        )
    with archive, path.open("rb") as raw_file:
        pickles = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise UserError(f"cannot read {path}: a zip file, but not a torch checkpoint (no single data.pkl inside)")
        root = pickles[0][: -len("data.pkl")]
        entries = {info.filename: info for info in archive.infolist()}

        # One private (copy-on-write) map of the whole file, as torch.load(mmap=True) does; slices share it.
        file_map = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=file_size)

        def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.UntypedStorage:
            info = entries.get(f"{root}data/{key}")
            if info is None:
                raise _CorruptCheckpoint(f"tensor data {root}data/{key} is missing")
            if info.compress_type != zipfile.ZIP_STORED:
                raise _CorruptCheckpoint(f"tensor data {info.filename} is compressed, which torch.save never does")
            start = _entry_data_offset(raw_file, info)
            nbytes = numel * dtype.itemsize
            if nbytes > info.file_size or start + info.file_size > file_size:
                raise _CorruptCheckpoint(f"tensor data {info.filename} is cut short")
            return file_map[start : start + nbytes]

        try:
            if f"{root}byteorder" in entries and archive.read(f"{root}byteorder").strip() not in (b"", b"little"):
                raise UserError(f"cannot read {path}: it was saved on a big-endian machine, which ccedit does not read")
            with archive.open(pickles[0]) as stream:
                unpickler = _RestrictedUnpickler(stream, load_storage)
                obj = unpickler.load()
        except _UNPICKLING_ERRORS as error:
            raise UserError(f"cannot read {path}: the checkpoint is damaged ({_describe(error)}); download it again")
    return obj, unpickler.replaced


def _unpickle_plain(path: Path) -> tuple[Any, list[str]]:
    """Unpickles a file that is a bare pickle stream; refuses torch's legacy format after its first record."""
    with path.open("rb") as file:
        unpickler = _RestrictedUnpickler(file)
        try:
            obj = unpickler.load()
        except _UNPICKLING_ERRORS as error:
            raise UserError(f"cannot read {path}: not a readable checkpoint ({_describe(error)})")
    if type(obj) is int and obj == _LEGACY_TORCH_MAGIC:
        raise UserError(
            f"cannot read {path}: it uses torch's legacy (pre-1.6) file format, which ccedit does not read; "
            "re-save it with a current torch.save or as .safetensors"
        )
    return obj, unpickler.replaced


def _describe(error: BaseException) -> str:
    """A short one-line description of an exception for a UserError message."""
    text = str(error).splitlines()[0][:160] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# 4. From the unpickled object to the weights.


def _refuse_code(path: Path, qualname: str) -> UserError:
    if qualname == "torch.storage._load_from_bytes":
        # A plain pickle.dump of tensors stores each one as a nested torch.load call.
        return UserError(
            f"refusing to load {path}: it is a plain pickle of tensors whose loading runs torch.load ({qualname}); "
            "save it with torch.save or as .safetensors"
        )
    return UserError(f"refusing to load {path}: it asks to run code ({qualname})")


def _extract_state_dict(path: Path, obj: Any, replaced: list[str]) -> dict[str, torch.Tensor]:
    """Returns the tensors of `obj["state_dict"]` (Lightning) or of `obj` itself (a bare state dict)."""
    name = _stand_in_name(obj)
    if name is not None:
        raise _refuse_code(path, name)
    if not isinstance(obj, dict):
        raise UserError(f"cannot read {path}: it holds a {type(obj).__name__}, not a dict of weights")
    weights = obj.get("state_dict", obj)
    name = _stand_in_name(weights)
    if name is not None:
        raise _refuse_code(path, name)
    if not isinstance(weights, dict):
        raise UserError(f"cannot read {path}: its state_dict entry is a {type(weights).__name__}, not a dict")

    state_dict: dict[str, torch.Tensor] = {}
    skipped = []
    for key, value in weights.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            state_dict[key] = value
            continue
        name = _find_stand_in(value) or _find_stand_in(key)
        if name is not None:
            raise _refuse_code(path, name)
        skipped.append(str(key))
    if not state_dict:
        raise UserError(f"cannot read {path}: it holds no tensors")
    if skipped:
        logger.warning("%s: ignoring %d entries that are not tensors: %s", path, len(skipped), ", ".join(skipped[:10]))
    if replaced:
        logger.info(
            "%s: skipped extras outside the weights without importing their classes: %s",
            path, ", ".join(replaced[:10]) + (f", ... ({len(replaced)} in all)" if len(replaced) > 10 else ""),
        )
    return state_dict


def open_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Reads the weights of a checkpoint, memory-mapped and without running code from the file.

    Reads torch zip files (`.ckpt` / `.pt` / `.pth`, as written by `torch.save` and PyTorch Lightning) and
    `.safetensors` files; the format is recognised from the content, not the suffix. For a Lightning file the
    weights are its `state_dict` entry, otherwise the whole (bare) dict; Lightning extras are skipped without
    importing any of their classes, see the module docstring for the rules.

    The tensors are views of a private (copy-on-write) memory map of the file: opening an 11 GB checkpoint costs
    no RAM until a tensor is read, and only one copy of the weights ever exists. Keep the returned tensors
    read-only; writing to one copies the touched pages, never the file.

    Args:
        path (`str` or `os.PathLike`): the checkpoint file.

    Returns:
        `dict[str, torch.Tensor]`: checkpoint key -> tensor, in the file's dtype (CCEdit releases hold float32,
        but cast on use in case a file was converted to float16).

    Raises:
        [`~ccedit.errors.ModelNotFoundError`]: the file does not exist.
        [`~ccedit.errors.UserError`]: the file is truncated or damaged, not a checkpoint, in torch's legacy format,
        or asks to run code where its weights should be (`"refusing to load ...: it asks to run code (os.system)"`).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"checkpoint not found: {path}")
    kind = _sniff(path)
    if kind == "safetensors":
        return _open_safetensors(path)
    if kind == "zip":
        obj, replaced = _unpickle_torch_zip(path)
    elif kind == "pickle":
        obj, replaced = _unpickle_plain(path)
    elif kind == "empty":
        raise UserError(f"cannot read {path}: the file is empty; download it again")
    else:
        raise UserError(
            f"cannot read {path}: not a checkpoint (expected a torch .ckpt/.pt/.pth zip file or a .safetensors file)"
        )
    return _extract_state_dict(path, obj, replaced)
