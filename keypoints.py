"""The keypoint set a model predicts: its names, its skeleton and what a horizontal flip does to it.

COCO's annotation format defines a keypoint set in a category: `keypoints` lists the names,
`skeleton` the limbs as 1-based pairs. `KeypointSet.from_category` reads that; COCO's own 17
person keypoints (`COCO17`) are the default everywhere. Flip pairs come from the names
(left_/right_, l_/r_, _left/_right, LeftHand/RightHand, ...) unless given explicitly.

A flip maps keypoint i of the mirrored image to keypoint `flip_index[i]` of the original:
a joint without a side (nose, neck, tail) maps onto itself; a joint with a side but no
partner in the set maps to -1, i.e. it is unlabelled after a flip (a mirrored left paw is a
right paw, which the set does not have).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from utils import COCO_PERSON_CATEGORY, PERSON_ID, UserError

NO_PARTNER = -1
_SIDES = {"left": 0, "l": 0, "right": 1, "r": 1}
_MIRROR = {"left": "right", "right": "left", "l": "r", "r": "l"}


def name_tokens(name: str) -> tuple[str, ...]:
    """`left_shoulder`, `LeftShoulder`, `L-Shoulder`, `shoulder left` -> lower-case words."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z])([A-Z][a-z])", r"\1 \2", spaced)
    return tuple(t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t)


def side_of(name: str) -> int | None:
    """0 for a left keypoint, 1 for a right one, None when the name tells no side."""
    sides = {_SIDES[t] for t in name_tokens(name) if t in _SIDES}
    return sides.pop() if len(sides) == 1 else None


def part_of(name: str) -> str:
    """The name without its side: `left_wrist` -> `wrist`, `RightHand` -> `hand`."""
    return "_".join(t for t in name_tokens(name) if t not in _SIDES) or name.lower()


def flip_index_from_names(names: Sequence[str]) -> tuple[int, ...]:
    """Pairs found by swapping left and right in each name; sideless joints map onto themselves."""
    by_tokens = {name_tokens(n): i for i, n in enumerate(names)}
    index = []
    for i, name in enumerate(names):
        if side_of(name) is None:
            index.append(i)
        else:
            mirrored = tuple(_MIRROR.get(t, t) for t in name_tokens(name))
            index.append(by_tokens.get(mirrored, NO_PARTNER))
    return tuple(index)


def flip_index_from_pairs(names: Sequence[str], pairs: Iterable[Sequence[str]]) -> tuple[int, ...]:
    """Explicit pairs, the complete list: every joint not in one maps onto itself."""
    index = list(range(len(names)))
    for pair in pairs:
        unknown = [n for n in pair if n not in names]
        if unknown:
            raise UserError(f"--flip-pairs {':'.join(pair)}: no keypoint named {unknown[0]!r} "
                            f"(the set has {', '.join(names)})")
        a, b = (names.index(n) for n in pair)
        index[a], index[b] = b, a
    return tuple(index)


@dataclass(frozen=True)
class KeypointSet:
    names: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]  # limbs, 0-based
    flip_index: tuple[int, ...]

    @property
    def num(self) -> int:
        return len(self.names)

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The left/right pairs, each once."""
        return [(self.names[i], self.names[j]) for i, j in enumerate(self.flip_index) if i < j]

    @property
    def unpaired(self) -> list[str]:
        """Joints with a side but no partner: unlabelled after a flip."""
        return [n for n, j in zip(self.names, self.flip_index) if j == NO_PARTNER]

    @property
    def unnamed(self) -> bool:
        """A set read off raw weights: only its size is known."""
        return self.names == unnamed_names(self.num)

    @classmethod
    def from_category(cls, category: dict[str, Any], source: str = "the annotation file") -> KeypointSet:
        """The set a COCO category defines (`keypoints` names, 1-based `skeleton`)."""
        names = category.get("keypoints")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise UserError(f"{source}: category {category.get('name')!r} needs 'keypoints', a list of names")
        if len(set(names)) != len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise UserError(f"{source}: keypoint name {twice!r} occurs twice in category {category.get('name')!r}")
        skeleton = []
        for limb in category.get("skeleton") or []:
            if not (isinstance(limb, list) and len(limb) == 2 and all(isinstance(k, int) and 1 <= k <= len(names)
                                                                        for k in limb)):
                raise UserError(f"{source}: skeleton limb {limb!r} must be two keypoint numbers "
                                f"from 1 to {len(names)} (COCO's skeleton is 1-based)")
            skeleton.append((limb[0] - 1, limb[1] - 1))
        return cls(tuple(names), tuple(skeleton), flip_index_from_names(names))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> KeypointSet:
        """The set recorded in a checkpoint's model_config; from the count alone for older
        checkpoints and raw weights (17: COCO's)."""
        names = config.get("keypoint_names")
        if names:
            return cls(tuple(names), tuple(tuple(limb) for limb in config.get("skeleton") or []),
                       tuple(config.get("flip_index") or flip_index_from_names(names)))
        count = int(config.get("num_keypoints") or COCO17.num)
        return COCO17 if count == COCO17.num else unnamed_set(count)

    def with_flip_pairs(self, pairs: Sequence[Sequence[str]] | None) -> KeypointSet:
        """This set with explicit flip pairs (None: the ones found from the names)."""
        if pairs is None:
            return self
        return KeypointSet(self.names, self.skeleton, flip_index_from_pairs(self.names, pairs))

    def to_config(self) -> dict[str, Any]:
        """Plain types for a checkpoint's model_config."""
        return {"num_keypoints": self.num, "keypoint_names": list(self.names),
                "skeleton": [list(limb) for limb in self.skeleton], "flip_index": list(self.flip_index)}

    def category(self, category_id: int = PERSON_ID, name: str = "person") -> dict[str, Any]:
        """This set as a COCO category (1-based skeleton)."""
        return {"id": category_id, "name": name, "supercategory": name, "keypoints": list(self.names),
                "skeleton": [[a + 1, b + 1] for a, b in self.skeleton]}

    def describe(self) -> str:
        """`13 keypoints (nose, left_shoulder, ..., right_ankle)`, or COCO's, in one phrase."""
        if self == COCO17:
            return "COCO's 17 person keypoints"
        if self.unnamed:
            return f"{self.num} unnamed keypoints"
        shown = ", ".join(self.names) if self.num <= 4 else f"{', '.join(self.names[:2])}, ..., {self.names[-1]}"
        return f"{self.num} keypoints ({shown})"

    def same_as(self, other: KeypointSet) -> bool:
        """Same keypoints, in the same order; a set read off raw weights matches any of its size."""
        if self.num != other.num:
            return False
        return self.unnamed or other.unnamed or self.names == other.names


def unnamed_names(count: int) -> tuple[str, ...]:
    return tuple(f"keypoint_{i + 1}" for i in range(count))


def unnamed_set(count: int) -> KeypointSet:
    return KeypointSet(unnamed_names(count), (), tuple(range(count)))


COCO17 = KeypointSet.from_category(COCO_PERSON_CATEGORY)

# COCO's 17 without eyes and ears, the nose joined to the shoulders: a reduced set for tests and to copy.
COCO13 = KeypointSet.from_category({
    "name": "person",
    "keypoints": [n for n in COCO17.names if part_of(n) not in ("eye", "ear")],
    "skeleton": [[1, 2], [1, 3], [2, 3], [2, 4], [3, 5], [4, 6], [5, 7], [2, 8], [3, 9], [8, 9],
                 [8, 10], [9, 11], [10, 12], [11, 13]],
})
SAMPLE_SETS = {"coco": COCO17, "coco13": COCO13}


def keypoint_category(data: dict[str, Any], source: str) -> dict[str, Any] | None:
    """The one category of a COCO annotation dict that lists keypoint names (None: none does)."""
    categories = [c for c in data.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
    if len(categories) > 1:
        raise UserError(f"{source} has {len(categories)} categories with keypoints "
                        f"({', '.join(str(c.get('name')) for c in categories)}); these scripts learn one")
    return categories[0] if categories else None


def keypoint_set_of(data: dict[str, Any], source: str) -> tuple[KeypointSet, int]:
    """(keypoint set, category id) of a COCO annotation dict. A file whose categories name no
    keypoints holds COCO's 17 person keypoints, as the scripts have always assumed."""
    category = keypoint_category(data, source)
    if category is None:
        return COCO17, PERSON_ID
    return KeypointSet.from_category(category, source), int(category.get("id", PERSON_ID))


def check_same(first: KeypointSet, second: KeypointSet, first_source: str, second_source: str,
               advice: str = "use a model trained on this keypoint set") -> None:
    """A clear error when a model of one keypoint set meets data of another: `first_source`
    carries its verb ("weights x.pth predict"), then "{second_source} has" ..."""
    if not first.same_as(second):
        raise UserError(f"{first_source} {first.describe()}, but {second_source} has {second.describe()}; {advice}")


def flip_warning(keypoint_set: KeypointSet) -> str | None:
    """Why flipping this set in training may teach the wrong side, or None."""
    if keypoint_set.unpaired:
        return (f"warning: {', '.join(keypoint_set.unpaired)} have a side but no partner: they are unlabelled "
                "in flipped images (name the pairs with --flip-pairs, or --flip-prob 0)")
    if not keypoint_set.pairs:
        return ("warning: no left/right pairs found among the keypoint names, so a flip keeps every label; "
                "if the set has sides, name the pairs with --flip-pairs A:B ..., or turn flips off with --flip-prob 0")
    return None
