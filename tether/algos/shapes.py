"""Shape guard shared by the math functions.

Broadcasting turns a shape slip into a wrong number instead of an error: a
reward head that returns (B, 1) against a (B,) tensor gives a (B, B) difference.
The functions of `tether.algos` call `require_same_shape` before mixing tensors.
"""

import torch


def require_same_shape(**tensors: torch.Tensor) -> None:
    """Raise ValueError naming every shape unless all the given tensors share one shape."""
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shapes must match: {listed}")
