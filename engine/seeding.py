"""Named, independent random streams derived from the run seed.

Each use (initialisation, data order of epoch e, a control's mask...) gets its own seed from a hash
of its name, so adding a new random draw never shifts the others and resumed levels replay exactly.
"""
import hashlib

import torch


def derive_seed(seed: int, *parts) -> int:
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, *parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *parts))
