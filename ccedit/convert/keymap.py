"""Shared helpers for renaming checkpoint keys: prefix handling, rule-based mapping and strict checking.

A converter builds one [`KeyMapper`] over the whole checkpoint, hands it the keys under one prefix, maps them with
[`Rule`]s or by hand, and finally calls [`KeyMapper.finish`] with the parameter names and shapes of the target
model (usually built on the meta device). `finish` raises one [`~ccedit.errors.UserError`] line that lists the
first unmapped source keys, missing or unexpected target keys and shape mismatches, so a changed checkpoint layout
fails loudly instead of loading half the weights.

Example:

```py
>>> import torch
>>> from ccedit.convert.keymap import KeyMapper, Rule
>>> checkpoint = {"vae.proj.weight": torch.zeros(4, 2), "unet.other": torch.zeros(1)}
>>> mapper = KeyMapper(checkpoint, prefix="vae.", name="toy model")
>>> mapper.apply([Rule(r"proj\\.(weight|bias)", r"to_out.\\1")])
>>> state_dict, consumed = mapper.finish({"to_out.weight": torch.Size([4, 2])})
>>> sorted(state_dict), sorted(consumed)
(['to_out.weight'], ['vae.proj.weight'])

```
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from ..errors import UserError

logger = logging.getLogger(__name__)

# How many key names an error message lists before it says "and N more".
MAX_LISTED_KEYS = 10


def format_keys(keys: Iterable[str], limit: int = MAX_LISTED_KEYS) -> str:
    """Joins key names for a one-line message, listing at most `limit` of them."""
    keys = sorted(keys)
    listed = ", ".join(keys[:limit])
    if len(keys) > limit:
        listed += f", ... and {len(keys) - limit} more"
    return listed


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Returns the entries whose key starts with `prefix`, with the prefix removed."""
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def expected_shapes(module: torch.nn.Module) -> dict[str, torch.Size]:
    """Returns `{name: shape}` of every entry of `module.state_dict()` (works for modules on the meta device)."""
    return {name: tensor.shape for name, tensor in module.state_dict().items()}


def conv1x1_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """Turns a 1x1 convolution weight `(out, in, 1, 1)` into the equivalent `nn.Linear` weight `(out, in)`.

    A 1x1 convolution applies the same `(out, in)` matrix at every pixel, which is exactly what a Linear layer does
    to each token once the pixels are flattened into a sequence. The result is a view, so memory-mapped weights stay
    unread until they are used.
    """
    if weight.ndim != 4 or weight.shape[2:] != (1, 1):
        raise UserError(f"expected a 1x1 convolution weight of shape (out, in, 1, 1), got {tuple(weight.shape)}")
    return weight[:, :, 0, 0]


@dataclass(frozen=True)
class Rule:
    """One renaming rule of a [`KeyMapper`].

    Args:
        pattern (`str`):
            Regular expression that must match the whole source key (with the mapper's prefix removed).
        target (`str` or `Callable[[re.Match], str]`):
            The target key: a template for `re.Match.expand` (`r"down_blocks.\\1.resnets.\\2"`) or a function of
            the match, for renames that need arithmetic such as reversed block order.
        transform (`Callable[[torch.Tensor], torch.Tensor]`, *optional*):
            Applied to the tensor, e.g. [`conv1x1_to_linear`]. Defaults to keeping the tensor as it is.
    """

    pattern: str
    target: str | Callable[[re.Match[str]], str]
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def target_key(self, match: re.Match[str]) -> str:
        """Returns the target key for a source key this rule matched."""
        return match.expand(self.target) if isinstance(self.target, str) else self.target(match)


class KeyMapper:
    """Maps the entries of a checkpoint under one prefix onto target names and remembers what it consumed.

    Args:
        checkpoint (`Mapping[str, torch.Tensor]`):
            The full checkpoint state dict; only keys starting with `prefix` are seen by this mapper.
        prefix (`str`, defaults to `""`):
            Prefix of the part to convert, e.g. `"first_stage_model."`. Keys passed to and returned from the
            methods below are relative to it; [`KeyMapper.consumed`] holds full checkpoint keys.
        name (`str`, defaults to `"model"`):
            What is converted, for error messages ("the VAE").
    """

    def __init__(self, checkpoint: Mapping[str, torch.Tensor], prefix: str = "", name: str = "model") -> None:
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.name = name
        self.source = strip_prefix(checkpoint, prefix)
        self.state_dict: dict[str, torch.Tensor] = {}
        # Which source key each target came from, so shape errors can name both sides.
        self.origin: dict[str, str] = {}
        self._consumed: set[str] = set()

    @property
    def consumed(self) -> set[str]:
        """Full checkpoint keys (prefix included) that were mapped or deliberately dropped."""
        return {self.prefix + key for key in self._consumed}

    def remaining(self) -> list[str]:
        """Relative source keys not consumed yet, in checkpoint order."""
        return [key for key in self.source if key not in self._consumed]

    def take(self, key: str) -> torch.Tensor:
        """Returns the source tensor under relative `key` and marks it consumed."""
        if key not in self.source:
            raise KeyError(self.prefix + key)
        self._consumed.add(key)
        return self.source[key]

    def drop(self, key: str, reason: str) -> None:
        """Consumes relative source `key` without a target, e.g. a classifier head the target model lacks."""
        self.take(key)
        logger.debug("%s: dropping %s%s (%s)", self.name, self.prefix, key, reason)

    def put(self, target_key: str, tensor: torch.Tensor, source_key: str = "<generated>") -> None:
        """Stores `tensor` under `target_key`; two sources for one target is a bug in the rules."""
        if target_key in self.state_dict:
            raise AssertionError(f"{self.name}: {target_key} mapped twice ({self.origin[target_key]}, {source_key})")
        self.state_dict[target_key] = tensor
        self.origin[target_key] = source_key

    def copy(self, key: str, target_key: str, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Consumes relative source `key` and stores it (optionally transformed) under `target_key`."""
        tensor = self.take(key)
        self.put(target_key, transform(tensor) if transform is not None else tensor, self.prefix + key)

    def apply(self, rules: Iterable[Rule]) -> None:
        """Maps every remaining source key that some rule matches; the first matching rule wins."""
        compiled = [(re.compile(rule.pattern), rule) for rule in rules]
        for key in self.remaining():
            for pattern, rule in compiled:
                match = pattern.fullmatch(key)
                if match is not None:
                    self.copy(key, rule.target_key(match), rule.transform)
                    break

    def finish(self, expected: Mapping[str, torch.Size]) -> tuple[dict[str, torch.Tensor], set[str]]:
        """Checks the mapping against the target's names and shapes and returns it.

        Args:
            expected (`Mapping[str, torch.Size]`):
                Every target key with its shape, e.g. [`expected_shapes`] of the target model on the meta device.

        Returns:
            `tuple[dict[str, torch.Tensor], set[str]]`: the target state dict and the consumed checkpoint keys.

        Raises:
            [`~ccedit.errors.UserError`]: when a source key stayed unmapped, a target key is missing or
            unexpected, or a shape differs. The message lists up to [`MAX_LISTED_KEYS`] keys of each kind.
        """
        problems = []
        unmapped = self.remaining()
        if unmapped:
            listed = format_keys(self.prefix + key for key in unmapped)
            problems.append(f"{len(unmapped)} checkpoint keys not mapped ({listed})")
        missing = expected.keys() - self.state_dict.keys()
        if missing:
            problems.append(f"{len(missing)} target keys missing ({format_keys(missing)})")
        unexpected = self.state_dict.keys() - expected.keys()
        if unexpected:
            problems.append(f"{len(unexpected)} target keys unknown to the model ({format_keys(unexpected)})")
        mismatched = [
            f"{self.origin[key]} {tuple(self.state_dict[key].shape)} -> {key} {tuple(expected[key])}"
            for key in sorted(self.state_dict.keys() & expected.keys())
            if self.state_dict[key].shape != expected[key]
        ]
        if mismatched:
            problems.append(f"{len(mismatched)} shape mismatches ({format_keys(mismatched)})")
        if problems:
            raise UserError(
                f"cannot convert the {self.name} (checkpoint prefix {self.prefix!r}): " + "; ".join(problems)
                + "; is this a CCEdit checkpoint of the expected version?"
            )
        logger.info(
            "%s: mapped %d checkpoint keys onto %d target keys", self.name, len(self._consumed), len(self.state_dict)
        )
        return self.state_dict, self.consumed
