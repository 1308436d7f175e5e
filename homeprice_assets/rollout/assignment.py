"""Sticky A/B assignment: a hash of the home's key decides its arm, the same in every process and restart.

The key is the ``parcel_id`` (a client key header when there is none); the salt is the candidate version,
so each rollout draws a fresh split while a home keeps its arm for the whole of one rollout.
"""

from __future__ import annotations

import hashlib

_SCALE = float(2**64)


def bucket(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from ``salt:key`` (BLAKE2b: stable across Python versions and hosts)."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def in_candidate_arm(key: str | None, weight: float, salt: str = "") -> bool:
    """True when this home goes to the candidate; a home without any key stays with the champion."""
    if not key or weight <= 0:
        return False
    return bucket(key, salt) < weight
