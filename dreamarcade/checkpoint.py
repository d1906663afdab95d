"""Checkpoints: safetensors weights plus a JSON config, written atomically, never pickled.

A checkpoint is a directory holding ``weights.safetensors`` and ``config.json``. The config records
the SHA-256 of the weights file, so a weights file that was truncated or swapped is detected on load.
Each file is written to a temporary name in the same directory and renamed into place. A save takes
three renames: the new config to ``config.json.next``, the new weights over ``weights.safetensors``,
then ``config.json.next`` over ``config.json``. A save cut off at any point leaves one complete
checkpoint: before the weights rename, the old config still matches the old weights; after it, the
new weights match ``config.json.next``, which :func:`load_checkpoint` then reads.

Nested state (an optimizer's ``state_dict``, RNG states) is stored with :func:`pack_state`: tensors and
arrays go to safetensors, the rest of the structure to JSON.

Example:
    >>> import tempfile, torch
    >>> from dreamarcade.checkpoint import save_checkpoint, load_checkpoint
    >>> d = tempfile.mkdtemp()
    >>> _ = save_checkpoint(d, {"w": torch.ones(2)}, {"kind": "demo"})
    >>> tensors, config = load_checkpoint(d, kind="demo")
    >>> tensors["w"].tolist(), config["kind"]
    ([1.0, 1.0], 'demo')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamarcade.errors import CheckpointError

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
PENDING_CONFIG_FILE = "config.json.next"  # the config of a save whose last rename may not have happened
FORMAT_VERSION = 1


class CheckpointFields(dict):
    """A checkpoint's config or tensors: a missing entry is a :class:`CheckpointError` naming the file, not a bare
    ``KeyError`` from deep inside a model's loader. Otherwise a plain dict (``get``, ``in`` and JSON work as usual).

    Example:
        >>> config = CheckpointFields({"z_size": 64}, "runs/wm/vae/config.json", "field")
        >>> config["z_size"], config.get("beta", 1.0)
        (64, 1.0)
        >>> try:
        ...     config["n_mixtures"]
        ... except CheckpointError as err:
        ...     print(str(err).split(":")[0])
        'runs/wm/vae/config.json' has no field 'n_mixtures'
    """

    def __init__(self, data: dict[str, Any], source: str | os.PathLike[str], what: str) -> None:
        super().__init__(data)
        self.source, self.what = str(source), what

    def __missing__(self, key: str) -> Any:
        raise CheckpointError(
            f"'{self.source}' has no {self.what} {key!r}: it was written by another version of dreamarcade or "
            "another model, or edited by hand. Pass a checkpoint written by the matching trainer, or re-train."
        )


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the result the mode of the file it replaces, or a new file's (the umask's:
        # it was always 0644, readable by all under a umask of 077)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    """The process's umask, read without changing it where the system says it (Linux); else set and restored."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_file(path: str | os.PathLike[str], what: str) -> None:
    """Raise ``ValueError`` if :func:`atomic_write_bytes` could not write a file at ``path``: it is a directory, or
    one of its parents is a file. ``what`` names it in the message (e.g. ``"--json"``). For a command to call before
    long work whose result goes there, so that the result is not lost at the end.

    Example:
        >>> import tempfile
        >>> from dreamarcade.checkpoint import check_output_file
        >>> d = tempfile.mkdtemp()
        >>> check_output_file(f"{d}/new/results.json", "--json")  # missing folders are created on writing
        >>> check_output_file(d, "--json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: --json '...' is a directory: give the path of a file to write, such as '.../results.json'.
    """
    path = Path(path)
    if path.is_dir():
        example = path / "results.json"
        raise ValueError(f"{what} '{path}' is a directory: give the path of a file to write, such as '{example}'.")
    parent = next((q for q in path.parents if q.exists()), None)  # the nearest one there; the rest are created
    if parent is not None and not parent.is_dir():
        raise ValueError(f"{what} '{path}': '{parent}' is a file, not a folder. Give a path inside a folder.")


def json_text(value: Any, indent: int | None = None) -> str:
    """``json.dumps(value)`` as strict JSON: NaN and infinities (a score with no finished episode) become ``null``,
    which every JSON reader takes; Python's bare ``NaN`` is refused by most outside Python.

    Example:
        >>> from dreamarcade.checkpoint import json_text
        >>> json_text({"score": float("nan"), "scores": [1.5, float("inf")]})
        '{"score": null, "scores": [1.5, null]}'
    """

    def strict(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strict(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [strict(x) for x in v]
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return json.dumps(strict(value), indent=indent, allow_nan=False)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(
    directory: str | os.PathLike[str],
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
) -> Path:
    """Save ``tensors`` and ``config`` into ``directory`` atomically; return the directory."""
    from safetensors.torch import save

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    blob = save(contiguous)
    full = dict(config)
    full["_format"] = FORMAT_VERSION
    full["_weights_sha256"] = hashlib.sha256(blob).hexdigest()
    pending = directory / PENDING_CONFIG_FILE
    weights = directory / WEIGHTS_FILE
    if pending.is_file() and weights.is_file():
        # An earlier save was cut off after its weights rename: its pending config is the only one that matches
        # the weights on disk. Finish that save before this one overwrites the pending config.
        on_disk = hashlib.sha256(weights.read_bytes()).hexdigest()
        try:
            finishes = _read_config(pending).get("_weights_sha256") == on_disk
        except CheckpointError:  # a pending config cut off mid-write never matched anything
            finishes = False
        if finishes:
            os.replace(pending, directory / CONFIG_FILE)
    # temporary files of a save killed mid-write (nothing else writes here: a run directory has one writer) are
    # never renamed into place: without this, every kill left a copy of the weights behind
    for name in (WEIGHTS_FILE, PENDING_CONFIG_FILE):
        for stale in directory.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    atomic_write_text(pending, json.dumps(full, indent=2, sort_keys=True, default=_json_default))
    atomic_write_bytes(weights, blob)
    os.replace(pending, directory / CONFIG_FILE)
    return directory


def load_checkpoint(
    directory: str | os.PathLike[str],
    kind: str | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_checkpoint`.

    Raises :class:`~dreamarcade.errors.CheckpointError` if the directory or a file is missing, the
    weights do not match the recorded hash, or ``kind`` is given and differs from ``config["kind"]``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    directory = Path(directory)
    w_path = directory / WEIGHTS_FILE
    if not checkpoint_exists(directory):
        raise CheckpointError(
            f"No complete checkpoint in '{directory}': expected {CONFIG_FILE} and {WEIGHTS_FILE}. "
            "Pass the directory a training run wrote its checkpoint to."
        )
    # A save running at the same time (an evaluation beside training) can rename files between these reads, so a
    # mismatch or a vanished file is read again a few times before the checkpoint is called corrupt.
    for attempt in range(_READ_ATTEMPTS):
        last = attempt == _READ_ATTEMPTS - 1
        try:
            blob, digest, config = _read_weights_and_config(directory)
        except FileNotFoundError as exc:
            if last:
                raise CheckpointError(f"Checkpoint files in '{directory}' keep disappearing while read: {exc}") from exc
            time.sleep(0.05 * (attempt + 1))
            continue
        expected = config.get("_weights_sha256")
        if config and (expected is None or digest == expected):  # None: a checkpoint from before the hash
            break
        if last and not config:
            raise CheckpointError(
                f"Checkpoint in '{directory}' has {WEIGHTS_FILE} but no {CONFIG_FILE}: its save was cut off. "
                "Re-train or restore the checkpoint."
            )
        if last:
            raise CheckpointError(
                f"Corrupt checkpoint in '{directory}': {WEIGHTS_FILE} does not match the hash recorded in "
                f"{CONFIG_FILE} (truncated or replaced). Re-train or restore the checkpoint."
            )
        time.sleep(0.05 * (attempt + 1))
    if kind is not None and config.get("kind") != kind:
        raise CheckpointError(
            f"Checkpoint in '{directory}' is a '{config.get('kind')}' checkpoint, not a '{kind}' one. "
            "Pass a checkpoint written by the matching model or agent."
        )
    try:
        tensors = load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"Corrupt weights file '{w_path}': {exc}. Re-train or restore it.") from exc
    moved = {k: v.to(map_location) for k, v in tensors.items()}
    return CheckpointFields(moved, w_path, "tensor"), CheckpointFields(config, directory / CONFIG_FILE, "field")


_READ_ATTEMPTS = 5


def _read_weights_and_config(directory: Path) -> tuple[bytes, str, dict[str, Any]]:
    """The weights' bytes and SHA-256, and the config that goes with them (a cut-off save's pending one if so)."""
    cfg_path, pending = directory / CONFIG_FILE, directory / PENDING_CONFIG_FILE
    blob = (directory / WEIGHTS_FILE).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    config = _read_config(cfg_path) if cfg_path.is_file() else {}
    if config.get("_weights_sha256", digest) != digest and pending.is_file():
        # A save was cut off after its weights rename: the new weights go with the pending config.
        candidate = _read_config(pending)
        if candidate.get("_weights_sha256") == digest:
            config = candidate
    elif not config and pending.is_file():  # the very first save was cut off after its weights rename
        config = _read_config(pending)
    return blob, digest, config


def checkpoint_exists(directory: str | os.PathLike[str]) -> bool:
    """True if ``directory`` holds a checkpoint (weights and a config, possibly a cut-off save's pending one)."""
    d = Path(directory)
    return (d / WEIGHTS_FILE).is_file() and ((d / CONFIG_FILE).is_file() or (d / PENDING_CONFIG_FILE).is_file())


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every value of ``tensors`` is finite, read back once (one device sync, not one per tensor)."""
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def refuse_diverged(
    model: torch.nn.Module,
    directory: str | os.PathLike[str],
    step: int,
    lr_flag: str,
    loss: float | None = None,
) -> None:
    """Raise :class:`~dreamarcade.errors.DivergedError` if ``loss`` (when given) or any floating weight or buffer of
    ``model`` is NaN or infinite. Trainers call it before they overwrite their checkpoint in ``directory``, so a run
    that diverged keeps its last good checkpoint (a resume with a lower learning rate goes on from there) instead of
    saving NaN weights over it and training on them until the end. ``lr_flag`` names the learning-rate flag in the
    advice ("--learning-rate 0.0001").

    >>> import tempfile, torch
    >>> from dreamarcade.checkpoint import refuse_diverged
    >>> net = torch.nn.Linear(2, 1)
    >>> refuse_diverged(net, tempfile.mkdtemp(), step=10, lr_flag="--learning-rate 0.001")  # finite: nothing
    >>> with torch.no_grad():
    ...     _ = net.weight.fill_(float("nan"))
    >>> try:
    ...     refuse_diverged(net, tempfile.mkdtemp(), step=10, lr_flag="--learning-rate 0.001")
    ... except FloatingPointError as err:  # a DivergedError
    ...     print(str(err).split(":")[0])
    the weights became NaN or inf by step 10 with --learning-rate 0.001
    """
    from dreamarcade.errors import DivergedError

    if loss is not None and not math.isfinite(loss):
        what = f"the loss became {loss}"
    elif not _all_finite([t for t in model.state_dict().values() if t.is_floating_point()]):
        what = "the weights became NaN or inf"
    else:
        return
    if checkpoint_exists(directory):
        kept = f"the last checkpoint in '{directory}' is intact (not overwritten). Resume from it with a lower "
    else:
        kept = "nothing was saved. Train again with a lower "
    raise DivergedError(f"{what} by step {step} with {lr_flag}: training diverged, and {kept}learning rate.")


@contextlib.contextmanager
def built_from_config(directory: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Turn a TypeError, ValueError, AttributeError or KeyError raised while a model is built from its checkpoint's
    config into a :class:`CheckpointError` naming the checkpoint: a field of the wrong type or value (edited by hand,
    or written by another version). Wrap the building only, never a training loop.

    >>> try:
    ...     with built_from_config("runs/wm/mdnrnn", "MDN-RNN checkpoint"):
    ...         int("512 units")  # a hidden size that is not a number
    ... except CheckpointError as err:
    ...     print(str(err).split(" (")[0])
    MDN-RNN checkpoint 'runs/wm/mdnrnn' has a config it cannot be built from
    """
    try:
        yield
    except CheckpointError:
        raise  # already names its file (a missing field)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a str where an object was, a missing key
        raise CheckpointError(
            f"{what} '{directory}' has a config it cannot be built from ({type(exc).__name__}: {exc}). Pass a "
            "checkpoint written by the matching trainer, or re-train."
        ) from exc


def read_json_object(path: str | os.PathLike[str]) -> CheckpointFields:
    """Read a JSON object that dreamarcade wrote (a checkpoint's config, a run's metadata) as
    :class:`CheckpointFields`: unreadable JSON, another JSON type or a missing field is a :class:`CheckpointError`
    naming the file.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "scores.json"
    >>> _ = path.write_text('{"levels": 3')  # cut off
    >>> try:
    ...     read_json_object(path)
    ... except CheckpointError as err:
    ...     print(str(err).split(":")[0].startswith("Corrupt"))
    True
    """
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"Corrupt '{path}': {exc}. Restore it, or re-run what wrote it.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"Corrupt '{path}': expected a JSON object, got {type(data).__name__}.")
    return CheckpointFields(data, path, "field")


_read_config = read_json_object


def with_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``{"w": t}`` -> ``{"prefix.w": t}``: several modules' weights can share one checkpoint."""
    return {f"{prefix}.{k}": v for k, v in state_dict.items()}


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors stored under ``prefix.`` by :func:`with_prefix`, with the prefix removed."""
    head = f"{prefix}."
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def pack_state(state: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Split nested ``state`` into tensors (added to ``tensors`` under ``prefix``) and a JSON skeleton.

    Tensors and numpy arrays are moved into ``tensors``; dicts, lists, tuples, numbers, strings and
    None stay in the returned skeleton, which :func:`unpack_state` turns back into ``state``.
    """
    if isinstance(state, torch.Tensor):
        key = prefix
        tensors[key] = state.detach().cpu().clone()
        return {"__tensor__": key}
    if isinstance(state, np.ndarray):
        key = prefix
        tensors[key] = torch.from_numpy(np.array(state, order="C", copy=True))  # keeps a 0-d array 0-d
        return {"__ndarray__": key}
    if isinstance(state, dict):
        items = [
            [pack_state(k, f"{prefix}.k{i}", tensors), pack_state(v, f"{prefix}.{i}", tensors)]
            for i, (k, v) in enumerate(state.items())
        ]
        return {"__dict__": items}
    if isinstance(state, (list, tuple)):
        packed = [pack_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(state)]
        return {"__tuple__": packed} if isinstance(state, tuple) else packed
    if isinstance(state, (np.integer, np.floating, np.bool_)):
        return state.item()
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise TypeError(f"cannot store a {type(state).__name__} in a checkpoint")


def unpack_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy()
        if "__dict__" in skeleton:
            return {unpack_state(k, tensors): unpack_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unpack_state(v, tensors) for v in skeleton["__tuple__"])
        raise CheckpointError(f"unrecognised entry in checkpoint state: {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unpack_state(v, tensors) for v in skeleton]
    return skeleton


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")
